#!/usr/bin/env python3
"""PyTorch side of the benchmarks (our own code): diffusers' UnCLIPPipeline, or one component's forward, on a
diffusers-layout Karlo folder, CPU, float32, no grad.

  probe                                   versions of torch / diffusers / transformers (one RESULT line)
  pipeline --model DIR --prompt P --seed S --steps P,D,S --threads N --out FILE
      UnCLIPPipeline.__call__ with torch.Generator().manual_seed(S), output_type="np". The components are loaded
      when first used and released when the next stage starts (super_res_first when super_res_last starts), so
      only one large model is held at a time (the real prior is 4.1 GB, the UNets 3.5 and 2.8 GB). The image is
      written to FILE as little-endian float32 NHWC.
  forward --model DIR --component NAME --inputs JSON --threads N --repeat N
      One component (a sub-folder of DIR, or DIR itself) called on random inputs described by JSON
      ({"name": {"shape": [...], "kind": "randn" | "int:HIGH" | "bool" | "int"}, ...}; kind "int" with shape []
      is a Python int); the first forward and `repeat` more are timed.

Prints progress on stderr and one line `RESULT {json}` on stdout. Peak RSS per stage comes from VmHWM, reset
(/proc/self/clear_refs) when the stage's first component is loaded, as the TypeScript side does.
"""
import argparse
import gc
import json
import os
import resource
import sys
import time


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def vm_mb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def process_peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def hashable_slow_added_token():
    """Without the Rust `tokenizers` package transformers falls back to a python AddedToken that cannot be hashed
    (loading a saved tokenizer folder then fails). Give it value semantics: equal when every option is equal."""
    try:
        import tokenizers  # noqa: F401
        return
    except ImportError:
        pass
    import transformers.tokenization_utils_base as base

    cls = base.AddedToken
    opts = ("content", "single_word", "lstrip", "rstrip", "special", "normalized")

    def same(a, b):
        if not isinstance(b, cls):
            return NotImplemented
        return all(getattr(a, o, None) == getattr(b, o, None) for o in opts)

    def set_state(self, state):
        for k, v in state.items():
            setattr(self, k, v)

    cls.__eq__ = same
    cls.__hash__ = lambda self: hash(("AddedToken", self.content))
    if "__setstate__" not in cls.__dict__:
        # transformers updates a token's options through __setstate__ (the Rust class has one).
        cls.__setstate__ = set_state


def probe():
    import torch
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "python": sys.executable}


# Which pipeline stage each component belongs to, in order.
STAGE_OF = {"text_encoder": "text", "prior": "prior", "text_proj": "decoder", "decoder": "decoder",
            "super_res_first": "super_res", "super_res_last": "super_res"}
STAGES = ["text", "prior", "decoder", "super_res"]


class StageClock:
    """Load seconds, run seconds, steps and peak RSS per stage; decides which components to release."""

    def __init__(self):
        self.t_start = time.perf_counter()
        self.stage = None
        self.stage_started = None
        self.load = {s: 0.0 for s in STAGES}
        self.run = {s: 0.0 for s in STAGES}
        self.steps = {s: 1 for s in STAGES}
        self.peak = {s: None for s in STAGES}
        self.lazies = []

    def enter(self, stage):
        """The first use of a component of `stage`: close the previous stage, free its components."""
        if stage == self.stage:
            return
        now = time.perf_counter()
        if self.stage is not None:
            self.peak[self.stage] = vm_mb("VmHWM")
            if self.stage == "text":
                # The text stage has no loop: its time is everything up to here but loading.
                self.run["text"] = now - self.stage_started - self.load["text"]
        for lz in self.lazies:
            if STAGES.index(STAGE_OF[lz.name]) < STAGES.index(stage):
                lz.release()
        gc.collect()
        reset_peak()
        self.stage = stage
        self.stage_started = time.perf_counter()

    def loop(self, stage, iterable):
        """The pipeline's progress_bar: the stage's denoising loop, timed without the loading done inside it."""
        items = list(iterable)
        load0 = self.load[stage]
        t0 = time.perf_counter()
        for i, x in enumerate(items):
            log("  %s step %d/%d" % (stage, i + 1, len(items)))
            yield x
        self.steps[stage] = len(items)
        self.run[stage] = time.perf_counter() - t0 - (self.load[stage] - load0)

    def finish(self):
        if self.stage is not None:
            self.peak[self.stage] = vm_mb("VmHWM")


class LazyComponent:
    """Stands in for a pipeline component: its config is read without loading; the weights are loaded on first
    use (call or attribute) and freed by release()."""

    def __init__(self, name, folder, cls, clock):
        self.__dict__.update(name=name, folder=folder, cls=cls, clock=clock, module=None, _config=None)
        clock.lazies.append(self)

    @property
    def config(self):
        if self.module is not None:
            return self.module.config
        if self._config is None:
            from diffusers.configuration_utils import FrozenDict

            self.__dict__["_config"] = FrozenDict(self.cls.load_config(self.folder))
        return self._config

    def get(self):
        if self.module is None:
            stage = STAGE_OF[self.name]
            self.clock.enter(stage)
            if self.name == "super_res_last":
                # Only one super-res UNet at a time, as the TypeScript pipeline does.
                for lz in self.clock.lazies:
                    if lz.name == "super_res_first":
                        lz.release()
                gc.collect()
            t0 = time.perf_counter()
            m = self.cls.from_pretrained(self.folder)
            m.eval()
            self.__dict__["module"] = m
            dt = time.perf_counter() - t0
            self.clock.load[stage] += dt
            log("  loaded %s in %.1f s (RSS %.0f MB)" % (self.name, dt, vm_mb("VmRSS") or 0))
        return self.module

    def release(self):
        if self.module is not None:
            self.__dict__["module"] = None
            gc.collect()

    def __call__(self, *args, **kwargs):
        return self.get()(*args, **kwargs)

    def __getattr__(self, attr):
        if attr.startswith("_"):
            # Probes for private or special attributes (copy, pickle, accelerate hooks) must not load the weights.
            raise AttributeError(attr)
        return getattr(self.get(), attr)


def quiet_libraries():
    """diffusers' note that accelerate is missing (low_cpu_mem_usage) on every component load."""
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()


def run_pipeline(a):
    import torch
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel, UnCLIPPipeline, UnCLIPScheduler
    from diffusers.pipelines.unclip.text_proj import UnCLIPTextProjModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    hashable_slow_added_token()
    quiet_libraries()
    torch.set_num_threads(a.threads)
    clock = StageClock()

    class TimedUnCLIPPipeline(UnCLIPPipeline):
        _loops = iter(["prior", "decoder", "super_res"])

        def progress_bar(self, iterable=None, total=None):
            return clock.loop(next(self._loops), iterable)

    d = a.model
    lazy = lambda name, cls: LazyComponent(name, os.path.join(d, name), cls, clock)  # noqa: E731
    pipe = TimedUnCLIPPipeline(
        prior=lazy("prior", PriorTransformer),
        decoder=lazy("decoder", UNet2DConditionModel),
        text_encoder=lazy("text_encoder", CLIPTextModelWithProjection),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(d, "tokenizer")),
        text_proj=lazy("text_proj", UnCLIPTextProjModel),
        super_res_first=lazy("super_res_first", UNet2DModel),
        super_res_last=lazy("super_res_last", UNet2DModel),
        prior_scheduler=UnCLIPScheduler.from_pretrained(os.path.join(d, "prior_scheduler")),
        decoder_scheduler=UnCLIPScheduler.from_pretrained(os.path.join(d, "decoder_scheduler")),
        super_res_scheduler=UnCLIPScheduler.from_pretrained(os.path.join(d, "super_res_scheduler")),
    )
    steps = [int(x) for x in a.steps.split(",")]
    generator = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    clock.enter("text")
    out = pipe(
        a.prompt or [""], generator=generator, prior_num_inference_steps=steps[0], decoder_num_inference_steps=steps[1],
        super_res_num_inference_steps=steps[2], output_type="np",
    )
    total = time.perf_counter() - t0
    clock.finish()
    image = out.images
    with open(a.out, "wb") as f:
        f.write(image.astype("<f4").tobytes())
    stages = {}
    for s in STAGES:
        stages[s] = {"loadSeconds": clock.load[s], "runSeconds": clock.run[s], "steps": clock.steps[s],
                     "secondsPerStep": clock.run[s] / clock.steps[s], "peakRssMB": clock.peak[s]}
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "stages": stages, "totalSeconds": total,
            "peakRssMB": process_peak_mb(), "shape": list(image.shape), "loadavg": list(os.getloadavg())}


COMPONENT_CLASSES = {
    "text_encoder": ("transformers", "CLIPTextModelWithProjection"),
    "prior": ("diffusers", "PriorTransformer"),
    "decoder": ("diffusers", "UNet2DConditionModel"),
    "super_res_first": ("diffusers", "UNet2DModel"),
    "super_res_last": ("diffusers", "UNet2DModel"),
    "text_proj": ("diffusers.pipelines.unclip.text_proj", "UnCLIPTextProjModel"),
}


def run_forward(a):
    import importlib

    import torch

    quiet_libraries()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    lib, name = COMPONENT_CLASSES[a.component]
    cls = getattr(importlib.import_module(lib), name)
    folder = os.path.join(a.model, a.component)
    if not os.path.isdir(folder):
        folder = a.model
    reset_peak()
    t0 = time.perf_counter()
    m = cls.from_pretrained(folder)
    m.eval()
    load_s = time.perf_counter() - t0
    load_peak = vm_mb("VmHWM")
    inputs = {}
    for k, spec in json.loads(a.inputs).items():
        kind, shape = spec["kind"], spec["shape"]
        if kind == "randn":
            inputs[k] = torch.randn(*shape)
        elif kind.startswith("int:"):
            inputs[k] = torch.randint(0, int(kind[4:]), shape)
        elif kind == "bool":
            inputs[k] = torch.ones(*shape, dtype=torch.bool)
        elif kind == "int":
            inputs[k] = int(spec["value"])
        else:
            raise ValueError("unknown input kind %r" % kind)
    times = []
    with torch.no_grad():
        for _ in range(1 + a.repeat):
            t = time.perf_counter()
            m(**inputs)
            times.append(time.perf_counter() - t)
            log("  %s forward %.2f s" % (a.component, times[-1]))
    warm = sorted(times[1:])
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "loadSeconds": load_s,
            "loadPeakRssMB": load_peak, "firstSeconds": times[0],
            "warmSeconds": warm[len(warm) // 2] if warm else None, "peakRssMB": process_peak_mb()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["probe", "pipeline", "forward"])
    p.add_argument("--model")
    p.add_argument("--prompt", action="append", help="repeat for several prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default="25,25,7")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out")
    p.add_argument("--component")
    p.add_argument("--inputs", default="{}")
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    if a.mode == "probe":
        r = probe()
    elif a.mode == "pipeline":
        r = run_pipeline(a)
    else:
        r = run_forward(a)
    sys.stdout.write("RESULT " + json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
