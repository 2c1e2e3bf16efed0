"""golive devices: the execution providers and devices ONNX Runtime sees on this machine."""

from __future__ import annotations

from golive.cli._app import JsonOpt, app, out, user_errors


@app.command()
def devices(as_json: JsonOpt = False) -> None:
    """List the execution providers and their devices here (ONNX Runtime's device API), plugin packages included."""
    with user_errors():
        from golive import api

        found = api.devices()
    if as_json:
        out.print_json(found.model_dump_json())
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"execution provider devices (onnxruntime {found.onnxruntime})", title_justify="left")
    for col in ("provider", "device", "vendor", "from", "details"):
        table.add_column(col)
    for d in found.devices:
        details = ", ".join(f"{k}={v}" for k, v in {**d.ep_metadata, **d.device_metadata}.items())
        table.add_row(
            d.provider,
            d.device_type,
            d.vendor,
            d.plugin or ("onnxruntime (built in)" if d.ep_metadata.get("built_in") else "onnxruntime"),
            escape(details[:80]),
        )
    out.print(table)
    listed = {d.provider for d in found.devices}
    for p in found.plugins:
        if p.state in ("registered", "built in") and p.devices:
            continue
        if p.state == "registered":
            line = f"installed ({p.package}), but it lists no device here: it runs on {p.runs_on}"
            if p.build:
                line += f"; the {p.build} build of onnxruntime has it built in and runs on any x86-64 CPU"
        elif p.state == "not installed":
            line = f"not installed: pip install 'golive[{p.extra}]'"
        else:
            line = f"{p.package} could not be registered: {p.state[8:]}"
        out.print(f"{p.provider}: {escape(line)}", highlight=False)
    others = [p for p in found.providers if p not in listed and p != "AzureExecutionProvider"]
    if others:
        out.print("also in this onnxruntime (no device listing): " + ", ".join(others), highlight=False)
    cpu = found.cpu
    out.print(
        f"CPU: {cpu.get('cpu') or '?'}; {cpu.get('cpus')} usable; {', '.join(cpu.get('isa') or []) or 'no AVX2'}", highlight=False
    )
