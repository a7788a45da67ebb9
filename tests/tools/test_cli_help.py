"""What ``lerobot-fastwam`` prints before it works: each sub-command's ``--help`` names it and shows the defaults,
and LeRobot's torchcodec traceback without FFmpeg's libraries is one line."""

import logging

import pytest
from lerobot.utils import import_utils

from lerobot_fastwam.tools.cli import TorchcodecWithoutFFmpeg, main


def help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_serve_and_cache_help_name_their_command(capsys):
    pytest.importorskip("grpc", reason='needs gRPC: pip install "lerobot_policy_fastwam[async]"')
    assert help_of(["serve"], capsys).startswith("usage: lerobot-fastwam serve ")
    assert help_of(["cache"], capsys).startswith("usage: lerobot-fastwam cache ")


@pytest.mark.parametrize(
    "command, shown",
    [
        ("demo", ["(default: 50)", "(default: 1000)", "(default: 0.0005)", "(default: button-press-topdown-v3)"]),
        ("memory", ["(default: wan2.2-ti2v-5b)", "(default: 24.0)", "(default: 16)", "(default: the preset's)"]),
        ("convert", ["(default: libero)", "(default: bfloat16)"]),
    ],
)
def test_help_shows_the_defaults(command, shown, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at the terminal's width
    text = help_of([command], capsys)
    assert text.startswith(f"usage: lerobot-fastwam {command} ")
    assert all(default in text for default in shown) and "(default: None)" not in text


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord(import_utils.__name__, logging.WARNING, __file__, 0, message, (), None)


MISSING = "OSError: libavutil.so.{}: cannot open shared object file: No such file or directory"  # FFmpeg 8: .60


def failure(reasons: dict[int, str]) -> str:
    """LeRobot's warning as ``get_safe_default_video_backend`` words it: torchcodec's error for each FFmpeg version."""
    tries = "".join(f"FFmpeg version {v}:\nTraceback (most recent call last):\n{r}\n\n" for v, r in reasons.items())
    return (
        f"Could not load libtorchcodec.\n[start of libtorchcodec loading traceback]\n{tries}"
        "[end of libtorchcodec loading traceback].\n'torchcodec' is installed but cannot be loaded (see the error "
        "above). Falling back to 'pyav' as a default decoder."
    )


def test_torchcodec_without_ffmpeg_is_one_line_once_and_other_failures_are_kept():
    quiet = TorchcodecWithoutFFmpeg()
    lerobot_said = failure({8: MISSING.format(60), 7: MISSING.format(59)})
    missing = record(lerobot_said)
    assert quiet.filter(missing)
    said = missing.getMessage()
    assert "\n" not in said and "pyav" in said and "libavutil.so.59, libavutil.so.60" in said
    assert not quiet.filter(record(lerobot_said))  # the next decoder choice says nothing
    for kept in (
        failure({8: "OSError: libtorchcodec_core8.so: undefined symbol: _ZN3c10"}),  # FFmpeg 8 there, torch not
        failure({8: MISSING.format(60), 7: "OSError: libavcodec.so.61: undefined symbol: av_packet_side_data"}),
    ):
        assert TorchcodecWithoutFFmpeg().filter(other := record(kept)) and other.getMessage() == kept


def test_lerobots_own_warning_on_this_machine(caplog, monkeypatch):
    """The real thing, where torchcodec cannot find FFmpeg (as on the CI machine). A fresh filter alone: the one an
    earlier ``main`` call installed may have said its line already."""
    quiet = TorchcodecWithoutFFmpeg()
    monkeypatch.setattr(logging.getLogger(import_utils.__name__), "filters", [quiet])
    with caplog.at_level(logging.WARNING, logger=import_utils.__name__):
        backends = {import_utils.get_safe_default_video_backend() for _ in range(2)}
    if backends == {"torchcodec"}:
        pytest.skip("torchcodec loads here: FFmpeg's shared libraries are installed")
    assert backends == {"pyav"}
    if "cannot open shared object file" not in caplog.text and not quiet.said:
        pytest.skip(f"torchcodec fails here for another reason, kept as LeRobot wrote it: {caplog.text[-300:]}")
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
