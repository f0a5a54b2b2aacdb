"""A pyverbs program for the intercept library's lab tests: Python loads libibverbs
through an extension module (privately, with dlopen), the case where RTLD_NEXT finds
nothing. Opens the first device, registers an MR, creates CQ and RC QPs, and prints what
it got."""
import sys

import pyverbs.device as d
import pyverbs.enums as e
from pyverbs.cq import CQ
from pyverbs.mr import MR
from pyverbs.pd import PD
from pyverbs.qp import QP, QPCap, QPInitAttr

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
dev = d.get_device_list()[0].name.decode()
with d.Context(name=dev) as ctx:
    pd = PD(ctx)
    mr = MR(pd, 4096, e.IBV_ACCESS_LOCAL_WRITE)
    cq = CQ(ctx, 16)
    qps = []
    for _ in range(n):
        attr = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=cq, rcq=cq, cap=QPCap(max_send_wr=4, max_recv_wr=4))
        try:
            qps.append(QP(pd, attr))
        except Exception as ex:  # pyverbs raises PyverbsRDMAError with the errno
            print("refused", getattr(ex, "error_code", ex))
            break
    print("pyverbs qps", len(qps), "mr", mr.length)
    for qp in qps:
        qp.close()
    mr.close()
