/* verbs_bench: control-path cost of the verbs the intercept library admits.
 *
 *   verbs_bench qp N      N x (ibv_create_qp + ibv_destroy_qp), prints ns per pair
 *   verbs_bench mr N      N x (ibv_reg_mr 64 KiB + ibv_dereg_mr), prints ns per pair
 *
 * The first pair is timed apart (`first_pair_ns`) and not counted in the N: it carries the
 * one-time costs (the library's first contact with the agent, its first budget) that
 * would otherwise be spread over the N pairs and read as a cost per verb.
 */
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int n = atoi(argv[2]);
	struct ibv_device **list = ibv_get_device_list(NULL);
	if (!list || !list[0])
		return 3;
	struct ibv_context *ctx = ibv_open_device(list[0]);
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_cq *cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	if (!ctx || !pd || !cq)
		return 4;
	static char buf[65536] __attribute__((aligned(4096)));
	double first = 0, t0 = 0;
	for (int i = 0; i <= n; i++) {
		if (i <= 1) {
			double t = now_ns();
			if (i == 1)
				first = t - t0;
			t0 = t;
		}
		if (!strcmp(argv[1], "qp")) {
			struct ibv_qp_init_attr a = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
						     .cap = {.max_send_wr = 4, .max_recv_wr = 4,
							     .max_send_sge = 1, .max_recv_sge = 1}};
			struct ibv_qp *qp = ibv_create_qp(pd, &a);
			if (!qp || ibv_destroy_qp(qp))
				return 5;
		} else {
			struct ibv_mr *mr = ibv_reg_mr(pd, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
			if (!mr || ibv_dereg_mr(mr))
				return 5;
		}
	}
	printf("first_pair_ns %.0f\n", first);
	printf("%s_ns_per_pair %.0f\n", argv[1], (now_ns() - t0) / n);
	return 0;
}
