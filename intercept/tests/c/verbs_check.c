/* verbs_check: drives real libibverbs calls for the intercept library's lab tests.
 * It prints one "key value" line per result so the tests can parse it, and asks the
 * library for its own counts through dlsym (so it also runs without the library).
 *
 *   verbs_check qps N [ex]            create N QPs (ibv_create_qp, or ibv_create_qp_ex)
 *   verbs_check wr SEND RECV          create one QP asking for SEND/RECV work requests
 *   verbs_check mrs N BYTES [runtime] register N MRs (constant or run-time access flags)
 *   verbs_check hold N SECONDS        create N QPs and hold them
 *   verbs_check gated FILE N          open the device, wait until FILE exists, create N QPs
 *   verbs_check threads T ITERS       T threads each create+destroy a QP ITERS times
 *   verbs_check fork                  QPs in a parent and a forked child
 *   verbs_check rereg BYTES NEW EXTRA register an MR of BYTES, re-register it on a NEW-byte
 *                                     buffer (ibv_rereg_mr), then register one of EXTRA
 *   verbs_check orphan N SECONDS      create N QPs, fork a child that holds them SECONDS, and
 *                                     exit (the objects outlive their creator)
 *   verbs_check lonely N SECONDS      create N QPs, then the main thread exits (pthread_exit)
 *                                     while another thread holds the process SECONDS
 *   verbs_check churn SECONDS BYTES   register and deregister an MR of BYTES in a loop
 *   verbs_check holdmix N M BYTES SECONDS
 *                                     create N QPs and register M MRs of BYTES, hold them
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct ibv_context *ctx;
static struct ibv_pd *pd;
static struct ibv_cq *cq;

static void die(const char *what) {
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(2);
}

static void open_dev(void) {
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	if (!list || n == 0)
		die("no RDMA device");
	ctx = ibv_open_device(list[0]);
	if (!ctx)
		die("ibv_open_device");
	pd = ibv_alloc_pd(ctx);
	if (!pd)
		die("ibv_alloc_pd");
	cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	if (!cq)
		die("ibv_create_cq");
}

static void print_counts(const char *tag) {
	int (*counts)(uint64_t *) = (int (*)(uint64_t *))dlsym(RTLD_DEFAULT, "rdmaq_intercept_counts");
	uint64_t c[5] = {0};
	if (counts && counts(c) == 0)
		printf("%s_lib_counts qps=%lu mrs=%lu bytes=%lu cqs=%lu pds=%lu\n", tag,
		       c[0], c[1], c[2], c[3], c[4]);
	else
		printf("%s_lib_counts none\n", tag);
}

static struct ibv_qp *make_qp(int ex, uint32_t send_wr, uint32_t recv_wr) {
	if (ex) {
		struct ibv_qp_init_attr_ex a = {0};
		a.send_cq = cq;
		a.recv_cq = cq;
		a.cap.max_send_wr = send_wr;
		a.cap.max_recv_wr = recv_wr;
		a.cap.max_send_sge = 1;
		a.cap.max_recv_sge = 1;
		a.qp_type = IBV_QPT_RC;
		a.pd = pd;
		/* More than IBV_QP_INIT_ATTR_PD: the inline goes through the context's ops. */
		a.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
		a.send_ops_flags = IBV_QP_EX_WITH_SEND;
		return ibv_create_qp_ex(ctx, &a);
	}
	struct ibv_qp_init_attr a = {0};
	a.send_cq = cq;
	a.recv_cq = cq;
	a.cap.max_send_wr = send_wr;
	a.cap.max_recv_wr = recv_wr;
	a.cap.max_send_sge = 1;
	a.cap.max_recv_sge = 1;
	a.qp_type = IBV_QPT_RC;
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	if (qp)
		printf("qp_caps send=%u recv=%u\n", a.cap.max_send_wr, a.cap.max_recv_wr);
	return qp;
}

static int create_qps(int n, int ex, struct ibv_qp **qps) {
	int ok = 0, first_errno = 0;
	for (int i = 0; i < n; i++) {
		errno = 0;
		struct ibv_qp *qp = make_qp(ex, 16, 16);
		if (qp)
			qps[ok++] = qp;
		else if (!first_errno)
			first_errno = errno;
	}
	printf("created %d\n", ok);
	printf("first_errno %d %s\n", first_errno, first_errno == EDQUOT ? "EDQUOT" :
	       first_errno == EAGAIN ? "EAGAIN" : first_errno == EPERM ? "EPERM" : "-");
	return ok;
}

static int cmd_qps(int argc, char **argv) {
	int n = atoi(argv[2]);
	int ex = argc > 3 && !strcmp(argv[3], "ex");
	struct ibv_qp **qps = calloc(n, sizeof(*qps));
	int ok = create_qps(n, ex, qps);
	print_counts("held");
	for (int i = 0; i < ok; i++)
		if (ibv_destroy_qp(qps[i]))
			die("ibv_destroy_qp");
	print_counts("after");
	return 0;
}

/* The device is open before the gate, so a test can time the QP creation itself. */
static int cmd_gated(char **argv) {
	printf("at_gate\n");
	fflush(stdout);
	while (access(argv[2], F_OK) != 0)
		usleep(10 * 1000);
	return cmd_qps(4, (char *[]){argv[0], "qps", argv[3], "", NULL});
}

static int cmd_wr(char **argv) {
	errno = 0;
	struct ibv_qp *qp = make_qp(0, atoi(argv[2]), atoi(argv[3]));
	printf("wr_result %s errno %d\n", qp ? "created" : "refused", qp ? 0 : errno);
	if (qp)
		ibv_destroy_qp(qp);
	return 0;
}

static int cmd_mrs(int argc, char **argv) {
	int n = atoi(argv[2]);
	size_t bytes = strtoull(argv[3], NULL, 0);
	/* Run-time flags: verbs.h then routes ibv_reg_mr to ibv_reg_mr_iova2. */
	int access = argc > 4 && !strcmp(argv[4], "runtime") ? (int)getpid() % 1 + IBV_ACCESS_LOCAL_WRITE
						      : 0;
	struct ibv_mr **mrs = calloc(n, sizeof(*mrs));
	int ok = 0, first_errno = 0;
	for (int i = 0; i < n; i++) {
		void *buf = aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
		errno = 0;
		struct ibv_mr *mr = access ? ibv_reg_mr(pd, buf, bytes, access)
					   : ibv_reg_mr(pd, buf, bytes, IBV_ACCESS_LOCAL_WRITE);
		if (mr)
			mrs[ok++] = mr;
		else if (!first_errno)
			first_errno = errno;
	}
	printf("registered %d\n", ok);
	printf("first_errno %d %s\n", first_errno, first_errno == EDQUOT ? "EDQUOT" : "-");
	print_counts("held");
	for (int i = 0; i < ok; i++)
		if (ibv_dereg_mr(mrs[i]))
			die("ibv_dereg_mr");
	print_counts("after");
	return 0;
}

static void *buffer(size_t bytes) {
	return aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
}

static int cmd_rereg(char **argv) {
	size_t bytes = strtoull(argv[2], NULL, 0), grown = strtoull(argv[3], NULL, 0),
	       extra = strtoull(argv[4], NULL, 0);
	struct ibv_mr *mr = ibv_reg_mr(pd, buffer(bytes), bytes, IBV_ACCESS_LOCAL_WRITE);
	if (!mr)
		die("ibv_reg_mr");
	errno = 0;
	int ret = ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, pd, buffer(grown), grown,
			       IBV_ACCESS_LOCAL_WRITE);
	printf("rereg %d errno %d %s length %zu\n", ret, ret ? errno : 0,
	       ret && errno == EDQUOT ? "EDQUOT" : "-", mr->length);
	print_counts("reregistered");
	errno = 0;
	struct ibv_mr *more = ibv_reg_mr(pd, buffer(extra), extra, IBV_ACCESS_LOCAL_WRITE);
	printf("extra %s errno %d %s\n", more ? "registered" : "refused", more ? 0 : errno,
	       !more && errno == EDQUOT ? "EDQUOT" : "-");
	if (more && ibv_dereg_mr(more))
		die("ibv_dereg_mr");
	if (ibv_dereg_mr(mr))
		die("ibv_dereg_mr");
	print_counts("after");
	return 0;
}

static int cmd_orphan(char **argv) {
	int n = atoi(argv[2]);
	struct ibv_qp **qps = calloc(n, sizeof(*qps));
	create_qps(n, 0, qps);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		/* The child holds the device file, and with it the parent's QPs (and nothing the
		 * caller waits on: its output goes nowhere). */
		setsid();
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		sleep(atoi(argv[3]));
		_exit(0);
	}
	printf("child %d\n", pid);
	return 0;
}

static void *sleeper(void *secs) {
	sleep((unsigned)(uintptr_t)secs);
	exit(0);
}

static int cmd_lonely(char **argv) {
	int n = atoi(argv[2]);
	struct ibv_qp **qps = calloc(n, sizeof(*qps));
	create_qps(n, 0, qps);
	fflush(stdout);
	pthread_t t;
	pthread_create(&t, NULL, sleeper, (void *)(uintptr_t)atoi(argv[3]));
	pthread_exit(NULL);
}

static int cmd_churn(char **argv) {
	int secs = atoi(argv[2]);
	size_t bytes = strtoull(argv[3], NULL, 0);
	void *buf = buffer(bytes);
	long cycles = 0;
	time_t end = time(NULL) + secs;
	while (time(NULL) < end) {
		struct ibv_mr *mr = ibv_reg_mr(pd, buf, bytes, IBV_ACCESS_LOCAL_WRITE);
		if (mr && !ibv_dereg_mr(mr))
			cycles++;
	}
	printf("cycles %ld\n", cycles);
	return 0;
}

/* hold N SECS [GATE]: with a gate, the QPs are made once that file exists (the device is
 * open before, so a test can place the creation within a short window). */
static int cmd_hold(int argc, char **argv) {
	int n = atoi(argv[2]);
	struct ibv_qp **qps = calloc(n, sizeof(*qps));
	while (argc > 4 && access(argv[4], F_OK) != 0)
		usleep(10 * 1000);
	create_qps(n, 0, qps);
	fflush(stdout);
	sleep(atoi(argv[3]));
	return 0;
}

static int cmd_holdmix(char **argv) {
	int n = atoi(argv[2]), m = atoi(argv[3]), ok = 0;
	size_t bytes = strtoull(argv[4], NULL, 0);
	struct ibv_qp **qps = calloc(n > 0 ? n : 1, sizeof(*qps));
	create_qps(n, 0, qps);
	for (int i = 0; i < m; i++)
		if (ibv_reg_mr(pd, buffer(bytes), bytes, IBV_ACCESS_LOCAL_WRITE))
			ok++;
	printf("registered %d\n", ok);
	fflush(stdout);
	sleep(atoi(argv[5]));
	return 0;
}

static atomic_int live, max_live, failures;
static int iters;

static void *churn(void *arg) {
	(void)arg;
	for (int i = 0; i < iters; i++) {
		struct ibv_qp *qp = make_qp(i % 2, 4, 4);
		if (!qp) {
			atomic_fetch_add(&failures, 1);
			continue;
		}
		int now = atomic_fetch_add(&live, 1) + 1;
		int seen = atomic_load(&max_live);
		while (now > seen && !atomic_compare_exchange_weak(&max_live, &seen, now))
			;
		atomic_fetch_sub(&live, 1);
		if (ibv_destroy_qp(qp))
			die("ibv_destroy_qp");
	}
	return NULL;
}

static int cmd_threads(char **argv) {
	int t = atoi(argv[2]);
	iters = atoi(argv[3]);
	pthread_t th[64];
	for (int i = 0; i < t; i++)
		pthread_create(&th[i], NULL, churn, NULL);
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	printf("max_live %d\n", atomic_load(&max_live));
	printf("failures %d\n", atomic_load(&failures));
	print_counts("after");
	return 0;
}

static int cmd_fork(void) {
	struct ibv_qp *qps[64];
	create_qps(2, 0, qps);
	print_counts("parent_before");
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		/* The child's ledger starts empty: it may create up to the full cap itself. */
		print_counts("child_start");
		struct ibv_qp *cq2[64];
		create_qps(8, 0, cq2);
		print_counts("child_held");
		fflush(stdout);
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	print_counts("parent_after");
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		return 2;
	open_dev();
	if (!strcmp(argv[1], "qps") && argc > 2)
		return cmd_qps(argc, argv);
	if (!strcmp(argv[1], "gated") && argc > 3)
		return cmd_gated(argv);
	if (!strcmp(argv[1], "wr") && argc > 3)
		return cmd_wr(argv);
	if (!strcmp(argv[1], "mrs") && argc > 3)
		return cmd_mrs(argc, argv);
	if (!strcmp(argv[1], "hold") && argc > 3)
		return cmd_hold(argc, argv);
	if (!strcmp(argv[1], "holdmix") && argc > 5)
		return cmd_holdmix(argv);
	if (!strcmp(argv[1], "threads") && argc > 3)
		return cmd_threads(argv);
	if (!strcmp(argv[1], "fork"))
		return cmd_fork();
	if (!strcmp(argv[1], "rereg") && argc > 4)
		return cmd_rereg(argv);
	if (!strcmp(argv[1], "orphan") && argc > 3)
		return cmd_orphan(argv);
	if (!strcmp(argv[1], "lonely") && argc > 3)
		return cmd_lonely(argv);
	if (!strcmp(argv[1], "churn") && argc > 3)
		return cmd_churn(argv);
	fprintf(stderr, "unknown command\n");
	return 2;
}
