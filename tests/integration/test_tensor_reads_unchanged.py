"""A tensor read by Python (``if loss < best:``, ``float(loss)``, ``int(n)``) goes through
dsprof's host-sync wrapper, and the script must not see it: the warnings torch gives in those
calls name the script's line as without dsprof (the wrapper's own frame is where C++ puts
them), Python's once-per-line filter shows as many of them, and an error in one prints the
plain run's traceback."""

from __future__ import annotations

from tests.integration.helpers import dsprof, plain, write

# float() of a tensor that requires grad warns (torch's once-a-process flag); every read under
# torch.jit.trace gives a TracerWarning at each line that reads
WARNS = """
import torch

torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
best, total = float("inf"), 0.0
for step in range(8):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    total += float(loss)
    if loss < best:
        best = loss.item()

def traced(x):
    if x.sum() > 0:
        x = x * 2
    return x * float(x.sum()) + int(x.max()) + x.min().item()

fn = torch.jit.trace(traced, torch.ones(3))
print(f"{total:.6f} {best:.6f} {fn(torch.ones(3)).sum().item():.3f}")
"""

RAISES = """
import torch

x = torch.ones(3)
for step in range(2):
    if x.sum() > 0:
        x = x * 0.5
if x > 0:
    print("never")
"""


def test_warnings_in_a_tensor_read_name_the_scripts_line_as_without_dsprof(tmp_path):
    # GIVEN a loop that sums float(loss) of a loss that requires grad, and a traced function
    # that reads tensors with if, float(), int() and item()
    script = write(tmp_path / "warns.py", WARNS)
    bare = plain(script)
    # WHEN run under dsprof
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    # THEN output and warnings are the plain run's, line for line: each at the script's line
    assert bare.returncode == 0 and res.code == 0, res.stderr
    assert res.stdout == bare.stdout
    assert "warns.py:13: UserWarning: Converting a tensor with requires_grad=True" in bare.stderr
    assert bare.stderr.count("TracerWarning") == 4, bare.stderr
    assert res.stderr == bare.stderr
    assert "dsprof" not in res.stderr


def test_an_error_in_a_tensor_condition_prints_the_plain_runs_traceback(tmp_path):
    # GIVEN a script whose `if x > 0:` on a three-value tensor raises
    script = write(tmp_path / "raises.py", RAISES)
    bare = plain(script)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    # THEN it exits 1 as without dsprof, and the traceback holds the script's frame only
    assert bare.returncode == res.code == 1
    assert "host_sync.py" not in res.stderr
    tail = bare.stderr[bare.stderr.index("Traceback"):]
    assert tail in res.stderr, res.stderr
