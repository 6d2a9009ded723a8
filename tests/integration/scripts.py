"""Tiny user scripts the integration tests run under ``dsprof run``; written to tmp dirs."""

TINY_TRAIN = '''
import json, os, sys, time
import torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    def forward(self, x):
        return self.body(x)

def main():
    steps = int(os.environ.get("TINY_STEPS", "8"))
    fail_at = int(os.environ.get("TINY_FAIL_AT", "-1"))
    how = os.environ.get("TINY_FAIL_HOW", "")
    facts = os.environ.get("TINY_FACTS")
    if facts:
        with open(facts, "w") as fh:
            json.dump({"argv": sys.argv, "name": __name__, "path0": sys.path[0],
                       "file": __file__}, fh)
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 32), torch.randint(0, 4, (16,))
    for step in range(steps):
        if step == fail_at:
            if how == "exit":
                sys.exit(3)
            if how == "raise":
                raise ValueError("boom at step %d" % step)
            if how == "interrupt":
                raise KeyboardInterrupt
            if how == "sigkill":
                import signal
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "sigterm":
                import signal
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    print("trained", steps, "steps")

if __name__ == "__main__":
    main()
'''

MANUAL_STEPS = '''
import torch, dsprof
model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh()).eval()
with torch.no_grad():
    for i in range(6):
        model(torch.randn(8, 16))
        dsprof.step()
print("inferred")
'''

# one outermost module call that runs for argv[1] seconds (its child's calls are not
# outermost): no optimizer, no backward(), and forwards are steps only from two on
NO_STEPS = '''
import sys, time
import torch

class Loop(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(8, 8)
    def forward(self, seconds):
        deadline = time.time() + seconds
        n = 0
        while time.time() < deadline:
            self.inner(torch.randn(4, 8)); n += 1
        return n

print("calls", Loop()(float(sys.argv[1])))
'''
