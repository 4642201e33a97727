"""`merge --out DIR` and `report --out DIR` never overwrite a user's files without --force:
a non-empty target (or a file) is refused with exit 2, the flag named and nothing written."""

from __future__ import annotations


from tuneplan.executor import ledger as store

from helpers import cli


def _user_dir(path):
    path.mkdir()
    (path / "report.md").write_text("my notes\n")
    (path / "config.json").write_text("{}\n")
    return path


def test_report_refuses_a_non_empty_out_without_force(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    store.connect(db).close()
    out = _user_dir(tmp_path / "mine")
    assert cli("report", "--db", str(db), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not empty" in err and "--force" in err
    assert (out / "report.md").read_text() == "my notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.md"]
    # a file as the target
    (tmp_path / "afile").write_text("x")
    assert cli("report", "--db", str(db), "--out", str(tmp_path / "afile")) == 2
    assert "not a directory" in capsys.readouterr().err
    # an empty directory is fine, and --force writes into a non-empty one
    (tmp_path / "empty").mkdir()
    assert cli("report", "--db", str(db), "--out", str(tmp_path / "empty")) == 0
    assert cli("report", "--db", str(db), "--out", str(out), "--force") == 0
    assert (out / "report.md").read_text() != "my notes\n" and (out / "config.json").exists()


def test_merge_refuses_a_non_empty_out_before_loading_anything(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # no plan.json: the refusal comes before the run directory is even read
    out = _user_dir(tmp_path / "deploy")
    assert cli("merge", str(run_dir), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not empty" in err and "--force" in err
    assert (out / "report.md").read_text() == "my notes\n"
    # the default target RUN_DIR/merged is protected the same way
    _user_dir(run_dir / "merged")
    assert cli("merge", str(run_dir)) == 2
    assert "--force" in capsys.readouterr().err
    # with --force it goes on to the (here missing) plan: exit 2 for that, not for the target
    assert cli("merge", str(run_dir), "--out", str(out), "--force") == 2
    assert "no plan.json" in capsys.readouterr().err
