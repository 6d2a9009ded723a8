"""torch's warnings that name the script's line through ``stacklevel`` name the same line
under dsprof, though its wrappers (``backward()``, the DataLoader, ``torch.save``) are frames
between the script and torch (``frames.hidden_from_warnings``): a full backward hook's
warning read ``torch/_tensor.py:623`` once, where plainly it names each of the script's lines
(every Opacus user's run)."""

from __future__ import annotations

from tests.integration.helpers import dsprof, plain, write

HOOKED = '''
import torch
from torch import nn

torch.manual_seed(0)
m = nn.Linear(4, 2)
m.register_full_backward_hook(lambda mod, gi, go: None)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
for i in range(12):
    x = torch.randn(8, 4)
    if i % 2:
        m(x).sum().backward()
    else:
        m(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
print("done", round(m.weight.sum().item(), 4))
'''


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if not line.startswith("[dsprof") and "Warning" in line]


def test_a_warning_raised_inside_backward_names_the_scripts_lines(tmp_path):
    script = write(tmp_path / "hooked.py", HOOKED)
    bare = plain(script)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), str(script))
    assert bare.returncode == 0 and res.code == 0, res.stderr[-2000:]
    # THEN the same warnings, each at the script's own line (12 and 14), not torch's
    said = _warnings(res.stderr)
    assert said == _warnings(bare.stderr)
    assert [w.split(":")[1] for w in said] == ["14", "12"]
    assert res.stdout == bare.stdout
