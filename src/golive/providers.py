"""Execution providers and their devices: the plugin packages golive registers with ONNX Runtime, the devices
ONNX Runtime lists, what is wrong when a provider cannot run here, and where a session placed each node."""

from __future__ import annotations

import threading
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from golive.cpu import available_cpus, cpu_features
from golive.errors import ProviderError

__all__ = [
    "CPU",
    "PLUGINS",
    "Devices",
    "EpDevice",
    "Placement",
    "Plugin",
    "PluginState",
    "available_providers",
    "built_in",
    "device_type_of",
    "devices",
    "ep_devices",
    "placement",
    "plugin_devices",
    "provider_problem",
    "register_plugins",
    "short_name",
]

CPU = "CPUExecutionProvider"


def short_name(provider: str) -> str:
    """CPUExecutionProvider -> CPU, OpenVINOExecutionProvider -> OpenVINO."""
    return provider.replace("ExecutionProvider", "")


class Plugin(NamedTuple):
    """An execution provider shipped as a pip package of its own (ONNX Runtime's plugin EPs)."""

    provider: str
    module: str  # the package's module: get_library_path() gives the library ONNX Runtime registers
    package: str  # pip name
    extra: str  # golive's extra that installs it
    devices: str  # what it runs on, for the message when it lists no device
    # another build of onnxruntime with the provider built in (it replaces the onnxruntime package), for where the
    # plugin lists no device: OpenVINO's plugin takes Intel devices only, the onnxruntime-openvino build any x86 CPU
    build: str = ""


PLUGINS = {
    "OpenVINOExecutionProvider": Plugin(
        "OpenVINOExecutionProvider",
        "onnxruntime_ep_openvino",
        "onnxruntime-ep-openvino",
        "openvino",
        "Intel CPUs, GPUs and NPUs (it lists no device on other vendors' CPUs)",
        "onnxruntime-openvino",
    ),
}
# Built-in providers that come with another build of ONNX Runtime than the CPU one
_BUILDS = {
    "CUDAExecutionProvider": "onnxruntime-gpu (and CUDA 12 with cuDNN 9 on the machine)",
    "TensorrtExecutionProvider": "onnxruntime-gpu with TensorRT 10 on the machine",
    "DmlExecutionProvider": "onnxruntime-directml (Windows)",
    "CoreMLExecutionProvider": "onnxruntime on macOS",
    "DnnlExecutionProvider": "an onnxruntime built with --use_dnnl",
}
_registered: dict[str, str] = {}  # provider -> what registering its plugin gave, in this process
_register_lock = threading.Lock()


def built_in(provider: str) -> bool:
    """True when this onnxruntime has ``provider`` built in (e.g. OpenVINO in the onnxruntime-openvino build):
    sessions then name it the classic way, and its plugin package, if any, is not registered."""
    import onnxruntime as ort

    return provider in ort.get_available_providers()


def register_plugins() -> dict[str, str]:
    """Register every installed plugin EP package with ONNX Runtime, once per process (workers do it again
    in theirs). Returns provider -> "registered", "built in" (this onnxruntime has it already), or why not
    ("not installed", or the error)."""
    with _register_lock:
        if len(_registered) == len(PLUGINS):
            return dict(_registered)
        import importlib

        import onnxruntime as ort

        for name, plugin in PLUGINS.items():
            if name in _registered:
                continue
            if built_in(name):
                _registered[name] = "built in"
                continue
            try:
                module = importlib.import_module(plugin.module)
            except ImportError:
                _registered[name] = "not installed"
                continue
            try:
                ort.register_execution_provider_library(name, module.get_library_path())
                _registered[name] = "registered"
            except Exception as exc:  # a broken or mismatched plugin: said, not fatal for the other providers
                _registered[name] = f"failed: {str(exc).strip()[:300]}"
        return dict(_registered)


class EpDevice(BaseModel):
    """One device an execution provider can run on, as ONNX Runtime's device API lists it."""

    provider: str
    device_type: str  # CPU, GPU, NPU
    vendor: str
    vendor_id: int
    device_id: int
    plugin: str | None = None  # the pip package that brought the provider, when it is a plugin
    ep_metadata: dict[str, str] = Field(default_factory=dict)
    device_metadata: dict[str, str] = Field(default_factory=dict)


def device_type_of(device: Any) -> str:
    return str(device.type).rsplit(".", 1)[-1]


def ep_devices() -> list[EpDevice]:
    """Every (provider, device) pair ONNX Runtime sees, built-in and from installed plugin packages."""
    import onnxruntime as ort

    register_plugins()
    found = [
        EpDevice(
            provider=d.ep_name,
            device_type=device_type_of(d.device),
            vendor=d.device.vendor,
            vendor_id=d.device.vendor_id,
            device_id=d.device.device_id,
            plugin=PLUGINS[d.ep_name].package if d.ep_name in PLUGINS and not built_in(d.ep_name) else None,
            ep_metadata={str(k): str(v) for k, v in dict(d.ep_metadata).items()},
            device_metadata={str(k): str(v) for k, v in dict(d.device.metadata).items()},
        )
        for d in ort.get_ep_devices()
    ]
    cpu = next((d for d in found if d.provider == CPU), None)
    for name in PLUGINS:  # built into this onnxruntime: the device API does not list it; its sessions run on the CPU
        if built_in(name) and cpu is not None and not any(d.provider == name for d in found):
            found.append(cpu.model_copy(update={"provider": name, "ep_metadata": {"built_in": "true"}, "device_metadata": {}}))
    return found


def available_providers() -> list[str]:
    """The providers a session can be built with here: this onnxruntime's own, and plugin providers that
    list at least one device."""
    import onnxruntime as ort

    register_plugins()
    found = list(ort.get_available_providers())
    for d in ort.get_ep_devices():
        if d.ep_name in PLUGINS and d.ep_name not in found:
            found.append(d.ep_name)
    return found


class PluginState(BaseModel):
    provider: str
    package: str
    extra: str
    state: str  # registered | built in | not installed | failed: ...
    devices: int  # devices it lists here (a registered plugin may list none: OpenVINO on a non-Intel CPU)
    runs_on: str
    build: str = ""  # the onnxruntime build that has it built in, where there is one


class Devices(BaseModel):
    """What ``golive devices`` shows: the providers a session can use here and the devices under them."""

    version: Literal[1] = 1
    onnxruntime: str
    providers: list[str]
    devices: list[EpDevice]
    plugins: list[PluginState]
    cpu: dict[str, Any]


def devices() -> Devices:
    """Every execution provider device here, the state of each plugin package golive knows, and the CPU."""
    import onnxruntime as ort

    states = register_plugins()
    found = ep_devices()
    return Devices(
        onnxruntime=ort.__version__,
        providers=available_providers(),
        devices=found,
        plugins=[
            PluginState(
                provider=name,
                package=p.package,
                extra=p.extra,
                state=states[name],
                devices=sum(d.provider == name for d in found),
                runs_on=p.devices,
                build=p.build,
            )
            for name, p in PLUGINS.items()
        ],
        cpu={**cpu_features(), "cpus": available_cpus()},
    )


def provider_problem(provider: str) -> tuple[str, str] | None:
    """Why ``provider`` cannot build a session here, and what to install or change (None: it can)."""
    import onnxruntime as ort

    if provider in PLUGINS and not built_in(provider):
        plugin, state = PLUGINS[provider], register_plugins()[provider]
        swap = f"pip uninstall -y onnxruntime && pip install {plugin.build}"
        if state == "not installed":
            return (
                f"{provider} comes from the plugin package {plugin.package}, which is not installed",
                f"pip install 'golive[{plugin.extra}]' (or pip install {plugin.package}){f'; or {swap}, a build with it built in' if plugin.build else ''}",
            )
        if state != "registered":
            return f"{plugin.package} is installed but ONNX Runtime cannot register it: {state[8:]}", (
                f"reinstall {plugin.package} for this onnxruntime ({ort.__version__})"
            )
        if not any(d.ep_name == provider for d in ort.get_ep_devices()):
            return (
                f"{plugin.package} is installed but {short_name(provider)} lists no device on this machine",
                f"it runs on {plugin.devices}"
                + (f"; here use the {plugin.build} build of onnxruntime, which has it built in: {swap}" if plugin.build else "")
                + "; `golive devices` shows what this machine has",
            )
        return None
    if provider in ort.get_available_providers():
        return None
    build = _BUILDS.get(provider)
    return (
        f"execution provider {provider} is not available in this onnxruntime ({ort.__version__})",
        (f"it needs {build}; " if build else "")
        + "available here: "
        + ", ".join(available_providers())
        + " (`golive devices` lists them)",
    )


def plugin_devices(provider: str, device_type: str | None) -> list[Any]:
    import onnxruntime as ort

    devices = [d for d in ort.get_ep_devices() if d.ep_name == provider]
    if device_type:
        devices = [d for d in devices if device_type_of(d.device) == device_type.upper()]
    if not devices:
        listed = sorted({device_type_of(d.device) for d in ort.get_ep_devices() if d.ep_name == provider})
        raise ProviderError(
            f"{short_name(provider)} has no {device_type} device on this machine",
            hint=f"its devices here: {', '.join(listed) or 'none'}; `golive devices` lists them",
        )
    return devices[:1]


class Placement(BaseModel):
    """Which provider ran which nodes of the graph ONNX Runtime runs (after its optimizations)."""

    provider: str  # the provider asked for
    nodes: int
    by_provider: dict[str, int]
    fallback: dict[str, int] = Field(default_factory=dict)  # op type -> nodes that ran elsewhere than on `provider`

    def describe(self) -> str:
        """E.g. '412 of 420 nodes on OpenVINO; 8 fell back to CPU: 6 Gather, 2 Shape'."""
        here = self.by_provider.get(self.provider, 0)
        if here == self.nodes:
            return (
                f"all {self.nodes} nodes on {short_name(self.provider)}"
                if self.nodes != 1
                else f"its one node on {short_name(self.provider)}"
            )
        others = ", ".join(short_name(p) for p in self.by_provider if p != self.provider)
        ops = ", ".join(f"{n} {op}" for op, n in sorted(self.fallback.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{here} of {self.nodes} nodes on {short_name(self.provider)}; {self.nodes - here} fell back to {others}: {ops}"


def placement(session: Any, provider: str) -> Placement | None:
    """Where each node ran, for a session made with ``record_placement=True`` (None when it recorded nothing)."""
    by_provider: dict[str, int] = {}
    fallback: dict[str, int] = {}
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except Exception:  # an onnxruntime without the API, or a session made without recording
        return None
    for sub in subgraphs:
        nodes = sub.get_nodes()
        by_provider[sub.ep_name] = by_provider.get(sub.ep_name, 0) + len(nodes)
        if sub.ep_name != provider:
            for node in nodes:
                fallback[node.op_type] = fallback.get(node.op_type, 0) + 1
    if not by_provider:
        return None
    return Placement(provider=provider, nodes=sum(by_provider.values()), by_provider=by_provider, fallback=fallback)
