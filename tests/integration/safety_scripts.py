"""User scripts that stress the session's lifecycle (fork, chdir, their own torch.profiler,
blocking in C, SIGTERM); written to tmp dirs by tests/integration/test_session_safety.py."""

# A tiny training step every script shares.
_STEP = '''
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 32), torch.randint(0, 4, (16,))

def train_step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
'''

# argv: STEPS MARKER SLEEP_S; touches MARKER after step 3, then keeps going slowly.
SLOW = _STEP + '''
import sys, time
steps, marker, pause = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
for i in range(steps):
    train_step()
    if i == 3:
        open(marker, "w").close()
    time.sleep(pause)
'''

# Forks a child that trains 3 steps and exits 3; DataLoader fork workers feed the parent.
FORK = _STEP + '''
import os, sys
for _ in range(6):
    train_step()
pid = os.fork()
if pid == 0:
    for _ in range(3):
        train_step()
    sys.exit(3)
_, status = os.waitpid(pid, 0)
print("child status", os.waitstatus_to_exitcode(status), flush=True)

class Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        return torch.full((32,), float(i))

loader = torch.utils.data.DataLoader(Numbers(), batch_size=4, num_workers=2,
                                     multiprocessing_context="fork")
total = 0.0
for batch in loader:
    total += float(batch[:, 0].sum())
    train_step()
print("loader total", total, flush=True)
'''

# Changes directory before every step (as Hydra does) and exits with status 4.
CHDIR = _STEP + '''
import os, sys, tempfile
for i in range(8):
    os.chdir(tempfile.mkdtemp(prefix="hop%d-" % i))
    train_step()
sys.exit(4)
'''

# Its own torch.profiler: schedule + tensorboard_trace_handler over steps 4-7 (argv: LOGDIR).
OWN_PROFILER = _STEP + '''
import sys
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler
with profile(activities=[ProfilerActivity.CPU],
             schedule=schedule(wait=3, warmup=1, active=4, repeat=1),
             on_trace_ready=tensorboard_trace_handler(sys.argv[1])) as prof:
    for _ in range(12):
        train_step()
        prof.step()
print("profiled")
'''

# Trains STEPS steps, touches MARKER, then blocks forever in C (a pthread mutex locked twice:
# the GIL is released, and signals do not interrupt the wait), like a stuck collective.
BLOCK_IN_C = _STEP + '''
import ctypes, sys
steps, marker, where = int(sys.argv[1]), sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # zeroed = PTHREAD_MUTEX_INITIALIZER (glibc)

# (what it needs is bound here: at the interpreter's teardown a global may already be None,
# and plain Python's destructor of `stuck` then raised instead of blocking)
def block(lock=libc.pthread_mutex_lock, held=mutex):
    lock(held)
    lock(held)

for _ in range(steps):
    train_step()
if where == "atexit":  # the script ends; its teardown blocks
    import atexit
    atexit.register(block)
    print("trained", flush=True)
elif where == "del":  # a global whose destructor blocks (as ~ProcessGroupGloo joining a thread)
    class Stuck:
        def __del__(self, block=block):
            block()
    stuck = Stuck()
    print("trained", flush=True)
else:  # blocks mid-run
    open(marker, "w").close()
    block()
'''

# DDP over gloo on 2 ranks, 12 steps; rank FAIL_RANK raises at step 4 (-1: none);
# destroy_process_group() at the end.
DDP = '''
import os, sys
import torch
import torch.distributed as dist
fail_rank = int(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(16, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(12):
    if rank == fail_rank and step == 4:
        raise ValueError("rank %d gave up at step %d" % (rank, step))
    opt.zero_grad()
    model(torch.randn(8, 16)).sum().backward()
    opt.step()
# torch 2.13 + gloo: freeing a DDP model can hang when a gloo worker thread is still freeing
# its last all-reduce (~ProcessGroupGloo joins it with the GIL held; it waits for the GIL).
# A barrier, then a short sleep with the GIL released, lets the workers go idle first.
import time
dist.barrier()
time.sleep(0.1)
dist.destroy_process_group()
print("rank", rank, "done")
'''

# Installs its own SIGTERM handler (argv: MARKER HANDLED): after 2 s it records the signal and
# exits 7.
OWN_SIGTERM = _STEP + '''
import signal, sys, time
marker, handled = sys.argv[1], sys.argv[2]

def on_term(signum, frame):
    time.sleep(2)  # a slow, graceful shutdown: longer than dsprof's grace period
    open(handled, "w").write(str(signum))
    sys.exit(7)

signal.signal(signal.SIGTERM, on_term)
for _ in range(4):
    train_step()
open(marker, "w").close()
while True:
    time.sleep(0.05)
'''
