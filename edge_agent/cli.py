"""The `edge-agent` command: run, check-config, detect, models (list, fetch, verify, quantize,
dynamic).

Parses arguments and maps failures to exit codes (2: bad input); holds no logic of its own."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from edge_agent import __version__, logs
from edge_agent.config import Config, ConfigError, load_config


def _load(path: Path) -> Config | None:
    """The validated config, or None after printing one `file: field: reason` line each."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    """Everything `run` would load, without running: the file, the stored remote changes,
    the model and the labels the rules watch, and what the node needs from the host."""
    from edge_agent import changes, remote_config
    from edge_agent.changes import BuildError

    path = Path(args.config)
    cfg = _load(path)
    if cfg is None:
        return 2
    if args.root:
        cfg = _reroot(cfg, Path(args.root))
    problems: list[str] = []
    try:
        changes.build(cfg)
    except BuildError as exc:
        problems += exc.problems
    merged, problem = remote_config.with_overrides(cfg, path)
    aside = "(run sets the stored changes aside and starts on the file alone)"
    if problem is not None:
        problems.append(f"{problem} {aside}")
    elif merged is not cfg and not problems:
        try:
            changes.build(merged)
        except BuildError as exc:
            where = remote_config.overrides_path(cfg)
            problems += [f"{where}: {line} {aside}" for line in exc.problems]
    problems += changes.host_problems(merged)
    for line in problems:
        print(f"{path}: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"{path}: ok (node {cfg.node.site}/{cfg.node.id}, {len(merged.rules)} rules"
          f"{', with stored remote changes' if merged is not cfg else ''})")
    return 0


def _probe(args: argparse.Namespace) -> int:
    """Exit 0 only when every part passes; 1 when one fails; 2 for a config that does not
    load at all."""
    from edge_agent.probe import probe

    cfg = _load(Path(args.config))
    if cfg is None:
        return 2
    out = Path(args.out) if args.out else Path(f"probe-{cfg.node.id}.jpg")
    parts = probe(cfg, out)
    for part in parts:
        print(part.line())
    failed = [p.name for p in parts if not p.ok]
    print(f"probe: {'all parts pass' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


def _reroot(cfg: Config, root: Path) -> Config:
    """The config as seen from an image being prepared under `root`: absolute paths (model,
    labels, fall models, state directory, TLS files) are taken inside it."""
    from edge_agent.config import FallRule

    def under(p: Path | None) -> Path | None:
        return root / p.relative_to("/") if p is not None and p.is_absolute() else p

    det = cfg.detector.model_copy(update={"model": under(cfg.detector.model),
                                          "labels": under(cfg.detector.labels)})
    rules = [r.model_copy(update={"model": under(r.model)}) if isinstance(r, FallRule) else r
             for r in cfg.rules]
    node = cfg.node.model_copy(update={"state_dir": under(cfg.node.state_dir)})
    tls = cfg.mqtt.tls
    if tls is not None:
        tls = tls.model_copy(update={k: under(getattr(tls, k))
                                     for k in ("ca_file", "cert_file", "key_file")})
    mqtt = cfg.mqtt.model_copy(update={"tls": tls})
    return cfg.model_copy(update={"detector": det, "rules": rules, "node": node, "mqtt": mqtt})


def _run(args: argparse.Namespace) -> int:
    from edge_agent import changes, remote_config
    from edge_agent.agent import Agent
    from edge_agent.changes import BuildError
    from edge_agent.detect.errors import ModelError
    from edge_agent.gpio import GpioError

    logs.setup(args.log_level)
    path = Path(args.config)
    cfg = _load(path)
    if cfg is None:
        return 2
    _warn_if_readable_secret(path, cfg.mqtt.password is not None)
    file_cfg = cfg
    cfg, problem = remote_config.with_overrides(file_cfg, path)
    built = None
    if problem is None and cfg is not file_cfg:
        try:
            built = changes.build(cfg)
        except BuildError as exc:
            problem = "; ".join(exc.problems)
    remote = None
    if problem is not None:
        # A stored remote change that cannot run must not fail every start: the node runs
        # on its file config and says so in the log and in its status.
        kept = remote_config.set_aside(file_cfg, problem)
        remote = {"state": "set_aside", "reason": problem,
                  "kept_as": kept.name if kept is not None else None}
        cfg = file_cfg
    try:
        built = built or changes.build(cfg)
    except BuildError as exc:
        for line in exc.problems:
            print(f"{path}: {line}", file=sys.stderr)
        return 2
    problems = changes.host_problems(cfg)
    for line in problems:
        print(f"{path}: {line}", file=sys.stderr)
    if problems:
        return 2
    try:
        agent = Agent(cfg, path, built, remote)
    except (ModelError, GpioError, ValueError) as exc:
        print(f"{path}: {exc}" if isinstance(exc, GpioError) else str(exc), file=sys.stderr)
        return 2
    except OSError as exc:  # the state directory or a TLS file went away since the check
        print(f"{path}: cannot start: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return agent.run()


def _warn_if_readable_secret(path: Path, has_password: bool) -> None:
    """A password in a file others can read is a leak waiting to happen; say so, never
    the password itself."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if has_password and mode & 0o004:
        print(f"{path}: warning: holds mqtt.password and is world-readable "
              f"(chmod 640 and chgrp to the service group)", file=sys.stderr)


def _models(args: argparse.Namespace) -> int:
    from edge_agent import catalog

    default, entries = catalog.load_catalog()
    folder = Path(args.dir)
    if args.action == "list":
        for name, e in entries.items():
            mark = "*" if name == default else " "
            have = "present" if (folder / e.file).exists() else "absent"
            print(f"{mark} {name:<16} {e.format:<12} {e.license:<20} {have:<8} {e.description}")
        return 0
    if args.action == "fetch":
        if not args.name:
            print("models fetch: give a model name (see 'edge-agent models list')",
                  file=sys.stderr)
            return 2
        try:
            path = catalog.fetch(args.name, folder, Path(args.source) if args.source else None)
        except catalog.CatalogError as exc:
            print(f"models fetch: {exc}", file=sys.stderr)
            return 2
        print(f"{args.name}: {path} (sha256 verified)")
        return 0
    if args.action == "quantize":
        return _quantize(args, folder)
    if args.action == "dynamic":
        return _dynamic(args, folder)
    bad = 0
    for name, e in entries.items():
        path = folder / e.file
        if not path.exists():
            print(f"{name}: absent ({path})")
            continue
        digest = catalog.sha256_of(path)
        ok = digest == e.sha256
        bad += not ok
        print(f"{name}: {'ok' if ok else 'CHECKSUM MISMATCH (got ' + digest + ')'} ({path})")
    return 2 if bad else 0


def _discovery(args: argparse.Namespace) -> int:
    from edge_agent.config import SEGMENT
    from edge_agent.uplink import discovery
    from edge_agent.uplink.topics import Topics

    for name in ("site", "node"):
        if not SEGMENT.match(getattr(args, name)):
            print(f"discovery: --{name} {getattr(args, name)!r}: not a topic segment "
                  "(letters, digits, '-', '_'; 1-64)", file=sys.stderr)
            return 2
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as exc:
            print(f"discovery: --password-file {args.password_file}: {exc.strerror}",
                  file=sys.stderr)
            return 2
    topics = Topics(args.topic_prefix, args.site, args.node)
    try:
        msgs = discovery.discovery_messages(topics, args.kind, prefix=args.prefix)
    except ValueError as exc:
        print(f"discovery: {exc}", file=sys.stderr)
        return 2
    if args.remove:
        msgs = discovery.removal_messages(msgs)
    port = args.port if args.port is not None else (8883 if args.ca_file else 1883)
    try:
        acked = discovery.publish_once(args.host, port, msgs, username=args.username,
                                       password=password, ca_file=args.ca_file)
    except discovery.DiscoveryError as exc:
        print(f"discovery: {exc}", file=sys.stderr)
        return 1
    verb = "removed" if args.remove else "published"
    print(f"{args.site}/{args.node}: {verb} {acked} of {len(msgs)} discovery configs")
    return 0 if acked == len(msgs) else 1


SAMPLE_CLIPS = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "vtest.avi",
    Path(__file__).resolve().parent.parent / "var" / "media" / "vtest.avi",
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
)
"""Where the sample clip lives on a development machine (../shared, the demo's cache, or
Debian's opencv-doc): the default calibration frames when none are given."""


def _quantize(args: argparse.Namespace, folder: Path) -> int:
    from edge_agent import catalog
    from edge_agent.detect.errors import ModelError
    from edge_agent.modeltools.quantize import QuantizeError, int8_path, quantize, read_frames

    if not args.name:
        print("models quantize: give a model name (see 'edge-agent models list') or an "
              "ONNX file", file=sys.stderr)
        return 2
    source = Path(args.calibration) if args.calibration else next(
        (p for p in SAMPLE_CLIPS if p.is_file()), None)
    if source is None:
        print("models quantize: no sample clip here; give --calibration VIDEO_OR_FOLDER "
              "with frames like the camera's", file=sys.stderr)
        return 2
    try:
        model = _model_file(args, folder)
        frames = read_frames(source, 2 * args.frames)
        report = quantize(model, Path(args.out) if args.out else int8_path(model),
                          frames, method=args.method, threads=args.threads)
    except (catalog.CatalogError, QuantizeError, ModelError) as exc:
        print(f"models quantize: {exc}", file=sys.stderr)
        return 2
    c = report.comparison
    a = c.agreement
    size = report.path.stat().st_size / 1e6
    print(f"{args.name}: wrote {report.path} ({size:.1f} MB) in {report.seconds:.1f} s, "
          f"{args.method} calibration on {report.calibration_frames} frames of {source.name}")
    print(f"  speed: float {c.reference_ms:.1f} ms, int8 {c.other_ms:.1f} ms per inference "
          f"({args.threads} threads): {c.speedup:.2f}x")
    print(f"  agreement with float on {c.frames} other frames: F1 {a.f1:.3f} ({a.matched} "
          f"matched, {a.only_reference} missed, {a.only_other} extra; IoU >= 0.5)")
    if c.speedup < 1.0:
        print("  note: int8 is slower than float on this CPU (its float kernels win here); "
              "keep the float model unless the target node's CPU differs")
    print(f'  use it: [detector] model = "{report.path}"')
    return 0


def _model_file(args: argparse.Namespace, folder: Path) -> Path:
    """`name` as an ONNX file when it is one (a dynamic copy, an int8 file), else the
    catalog's model of that name, fetched into `folder`."""
    from edge_agent import catalog

    given = Path(args.name)
    if given.suffix == ".onnx" or given.exists():
        return given
    return catalog.fetch(args.name, folder, Path(args.source) if args.source else None)


def _dynamic(args: argparse.Namespace, folder: Path) -> int:
    from edge_agent import catalog
    from edge_agent.detect.errors import ModelError
    from edge_agent.detect.letterbox import crop_input
    from edge_agent.modeltools.dynamic import dynamic_path, make_dynamic

    if not args.name:
        print("models dynamic: give a model name (see 'edge-agent models list') or an ONNX "
              "file", file=sys.stderr)
        return 2
    try:
        model = _model_file(args, folder)
        report = make_dynamic(model, Path(args.out) if args.out else dynamic_path(model))
    except (catalog.CatalogError, ModelError) as exc:
        print(f"models dynamic: {exc}", file=sys.stderr)
        return 2
    nw, nh = report.nominal
    print(f"{args.name}: wrote {report.path} (input height/width dynamic, nominal {nw}x{nh} "
          f"in its metadata; outputs at {nw}x{nh} equal the source's)")
    times = ", ".join(f"{w}x{h} {ms:.1f} ms" for (w, h), ms in report.timings_ms.items())
    print(f"  one inference, 1 thread: {times} (source at {nw}x{nh}: "
          f"{report.source_ms:.1f} ms)")
    print(f'  use it: [detector] model = "{report.path}"; whole frames and region crops '
          f"then run at the smallest multiple of 32 that holds them, up to {nw}x{nh} "
          f"(a 4:3 frame at {'x'.join(map(str, crop_input(4000, 3000, (nw, nh))))})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edge_agent.detect import cli as detect_cli

    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the camera node until stopped")
    run.add_argument("--config", required=True, help="node config (TOML)")
    run.add_argument("--log-level", default="INFO", type=str.upper,
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=_run)
    probe = sub.add_parser("probe", help="check an installed node part by part: camera frame, "
                                         "detector, broker connection, annotated JPEG")
    probe.add_argument("--config", required=True, help="node config (TOML)")
    probe.add_argument("--out", help="where to write the annotated frame "
                                     "(default: probe-<node>.jpg here)")
    probe.set_defaults(func=_probe)
    check = sub.add_parser("check-config", help="check a node config as run would load it: "
                                                "schema, stored remote changes, model, labels, "
                                                "state directory, TLS files")
    check.add_argument("config")
    check.add_argument("--root", help="take the config's absolute paths inside this directory "
                                      "(an image being prepared, as flash.sh pi --root does)")
    check.set_defaults(func=_check_config)
    models = sub.add_parser("models", help="list, fetch, verify, quantize catalog models, or "
                                            "make a dynamic-size copy of one")
    models.add_argument("action", choices=["list", "fetch", "verify", "quantize", "dynamic"])
    models.add_argument("name", nargs="?",
                        help="catalog name (quantize, dynamic: or an ONNX file)")
    models.add_argument("--dir", default="/var/lib/safecity-edge/models",
                        help="local model folder")
    models.add_argument("--from", dest="source",
                        help="offline folder to take the file from (else SAFECITY_MODELS_FROM, "
                             "else the catalog's download source)")
    models.add_argument("--calibration",
                        help="quantize: video file or image folder with frames like the "
                             "camera's (default: the sample clip vtest.avi when present)")
    models.add_argument("--frames", type=int, default=32,
                        help="quantize: calibration frames; as many others check agreement")
    models.add_argument("--method", default="minmax",
                        choices=["minmax", "entropy", "percentile"],
                        help="quantize: calibration method (percentile: slower, closer)")
    models.add_argument("--threads", type=int, default=2,
                        help="quantize: threads when timing float against int8")
    models.add_argument("--out",
                        help="quantize, dynamic: file to write (default: NAME_int8.onnx, "
                             "NAME_dynamic.onnx next to the model)")
    models.set_defaults(func=_models)
    disc = sub.add_parser("discovery", help="publish Home Assistant discovery for a node "
                                             "(sensor boards, from flash.sh)")
    disc.add_argument("--kind", required=True, choices=["camera", "gas", "flood", "vibration"])
    disc.add_argument("--site", required=True)
    disc.add_argument("--node", required=True)
    disc.add_argument("--host", default="127.0.0.1")
    disc.add_argument("--port", type=int, default=None,
                      help="default 1883, or 8883 with --ca-file")
    disc.add_argument("--ca-file", help="connect over TLS and verify the broker against "
                                        "this CA certificate (PEM)")
    disc.add_argument("--username")
    disc.add_argument("--password-file", help="file holding the MQTT password")
    disc.add_argument("--prefix", default="homeassistant")
    disc.add_argument("--topic-prefix", default="safecity/v1")
    disc.add_argument("--remove", action="store_true", help="remove the entities instead")
    disc.set_defaults(func=_discovery)
    detect_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
