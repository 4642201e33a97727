"""`tuneplan completion SHELL`: a completion script generated from the real parser (shtab), which
bash then uses to complete commands and flags."""

import shutil
import subprocess

import pytest

from helpers import cli_captured


def _bash_complete(script: str, words: list[str]) -> list[str]:
    """What bash's completion function offers for ``words`` (the last one being typed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    prog = f"""
source /dev/stdin <<'SCRIPT'
{script}
SCRIPT
COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}
COMP_LINE="{" ".join(words)}"; COMP_POINT=${{#COMP_LINE}}
_shtab_tuneplan tuneplan '{words[-1]}' '{words[-2]}'
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30, check=True)
    return [w for w in out.stdout.split("\n") if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_and_each_commands_own_flags():
    code, script, err = cli_captured("completion", "bash")
    assert code == 0 and err == ""
    assert "complete -o bashdefault" in script and "-F _shtab_tuneplan tuneplan" in script
    assert _bash_complete(script, ["tuneplan", "adv"]) == ["advise"]
    assert set(_bash_complete(script, ["tuneplan", "c"])) == {"compare", "check", "calibrate", "completion"}
    # flags come from that command's parser: advise's, not run's
    assert _bash_complete(script, ["tuneplan", "advise", "--measure-d"]) == ["--measure-distance"]
    assert "--resume" in _bash_complete(script, ["tuneplan", "run", "--res"])
    assert _bash_complete(script, ["tuneplan", "run", "--measure-d"]) == []


def test_zsh_script_and_an_unknown_shell():
    code, script, _ = cli_captured("completion", "zsh")
    assert code == 0
    assert script.startswith("#compdef tuneplan")
    assert "--measure-distance" in script and "--pilot-steps" in script
    with pytest.raises(SystemExit) as e:
        cli_captured("completion", "fish")
    assert e.value.code == 2
