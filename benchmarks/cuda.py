"""Benchmark: the CUDA backend against the CPU backend (issue #5's measurements).

Run from the repository root on a machine with an NVIDIA GPU::

    python -m benchmarks.cuda                 # 60,000 x 784, 10 classes, 20 epochs
    python -m benchmarks.cuda --devices cpu   # the CPU side alone
    NUMBA_ENABLE_CUDASIM=1 python -m benchmarks.cuda --tiny   # a smoke run, no GPU

For each device, side by side in one process (``time.perf_counter``, the GPU
synchronised before a clock is read): compile time (the first ``fit`` and requests
on a tiny problem), then on random dense float64 data a multinomial
``DeltaGradLogisticRegression``'s ``fit``, a ``partial_unfit`` of 0.1% of the rows
(DeltaGrad) and the same request with ``method="exact"`` (the best of
``--request-repeats``, each on a deep copy of the fitted model made before the
clock starts), the speed-up of DeltaGrad over the exact retrain with the
ceiling ``T / (j0 + (T - j0) / T0)`` of its replayed span, the fidelity ratio, and
on CUDA: the batch gradient kernels' effective bandwidth (bytes of the batch's rows
read per second), the host's cost of one kernel launch, each kernel's launches and
synchronised time in one request of each kind, and kernel launches per training,
exact and approximate iteration. Markdown tables go to stdout; ``--profile FILE``
writes a cProfile of one CUDA request.
"""

import argparse
import collections
import copy
import sys
import time

import numpy as np

from sklearn_deltagrad import DeltaGradLogisticRegression

from .unlearning import ceilings, markdown_table


def synchronize(device):
    if device == "cuda":
        from numba import cuda

        cuda.synchronize()


def timed(device, function, *args, **kwargs):
    synchronize(device)
    start = time.perf_counter()
    result = function(*args, **kwargs)
    synchronize(device)
    return time.perf_counter() - start, result


class KernelLaunches:
    """Wraps the CUDA kernels module's kernels to count launches per kernel; with
    ``timed=True`` it also synchronises the GPU around each launch and adds up its
    seconds (host launch overhead + the kernel's run). :meth:`restore` unwraps."""

    def __init__(self, timed=False):
        from sklearn_deltagrad._kernels import cuda as kernels

        self.kernels = kernels
        self.timed = timed
        self.counts = collections.Counter()
        self.seconds = collections.defaultdict(float)
        self.originals = {
            name: value for name, value in vars(kernels).items() if is_kernel(value)
        }
        for name, kernel in self.originals.items():
            setattr(kernels, name, self._wrapped(name, kernel))

    @property
    def count(self):
        return sum(self.counts.values())

    def reset(self):
        self.counts.clear()
        self.seconds.clear()

    def restore(self):
        for name, kernel in self.originals.items():
            setattr(self.kernels, name, kernel)

    def _wrapped(self, name, kernel):
        counter = self

        class Wrapped:
            def __getitem__(self, config):
                launch = kernel[config]

                def call(*args):
                    counter.counts[name] += 1
                    if not counter.timed:
                        return launch(*args)
                    synchronize("cuda")
                    start = time.perf_counter()
                    launch(*args)
                    synchronize("cuda")
                    counter.seconds[name] += time.perf_counter() - start

                return call

        return Wrapped()


def is_kernel(value):
    """A ``@cuda.jit`` kernel (not a device function), real or simulated."""
    options = getattr(value, "targetoptions", None)
    if options is not None:
        return not options.get("device", False)
    return getattr(value, "_device", True) is False


def make_data(n_samples, n_features, n_classes, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    scores = X @ rng.standard_normal((n_features, n_classes)) / np.sqrt(n_features)
    y = np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)
    return X, y


def estimator(args, device):
    return DeltaGradLogisticRegression(
        batch_size=args.batch_size,
        max_iter=args.epochs,
        random_state=0,
        device=device,
    )


def compile_seconds(args, device):
    """The first fit and requests on a tiny problem: compile (or cache load) + run.

    Long enough (160 iterations) that the replay runs approximate iterations too,
    except in a ``--tiny`` run (for the simulator, where each launch is slow)."""
    X, y = make_data(64, 5, args.n_classes, seed=1)
    epochs = 3 if args.tiny else 40
    tiny = DeltaGradLogisticRegression(batch_size=16, max_iter=epochs, device=device)
    seconds, _ = timed(
        device,
        lambda: (
            tiny.fit(X, y)
            .partial_unfit(indices=[0, 1])
            .partial_unfit(indices=[2], method="exact")
        ),
    )
    return seconds


def gradient_bandwidth(fitted, X, y, repeats):
    """Seconds and bytes/s of one batch gradient on the GPU (the rows it reads)."""
    from numba import cuda

    from sklearn_deltagrad._kernels import cuda as kernels

    model = fitted._model
    rows = fitted._schedule.batch_ids[: min(fitted.batch_size, X.shape[0])]
    d_X = cuda.to_device(X)
    d_Y = cuda.to_device(fitted._rows.Y)
    d_s = cuda.to_device(fitted._rows.weights)
    d_rows = cuda.to_device(rows)
    d_w = cuda.to_device(fitted._cache.final)
    d_offset = cuda.to_device(model.offset)
    out = cuda.device_array(model.n_params)
    workspace = kernels.Workspace(rows.size, X.shape[1], model.n_outputs)

    def batch_gradient():
        for _ in range(repeats):
            kernels.gradient_sum(
                d_X, d_Y, d_s, d_rows, d_w, d_offset, model.loss, model.n_outputs,
                model.fit_intercept, out, workspace,
            )  # fmt: skip

    batch_gradient()  # compile
    seconds, _ = timed("cuda", batch_gradient)
    seconds /= repeats
    # The rows are read twice (outputs, then the sums over the rows).
    nbytes = 2 * rows.size * X.shape[1] * X.itemsize
    return seconds, nbytes / seconds


def best_request(device, fitted, repeats, **request):
    """The fastest of ``repeats`` runs of ``partial_unfit(**request)``, each on a
    deep copy of ``fitted`` made before the clock starts."""
    best = None
    for _ in range(repeats):
        model = copy.deepcopy(fitted)
        seconds, updated = timed(device, model.partial_unfit, **request)
        if best is None or seconds < best[0]:
            best = (seconds, updated)
    return best


def run_device(args, device, X, y, removed):
    row = {"device": device, "compile_s": compile_seconds(args, device)}
    fit_s, fitted = timed(device, estimator(args, device).fit, X, y)
    row["fit_s"] = fit_s
    dg_s, dg = best_request(device, fitted, args.request_repeats, indices=removed)
    exact_s, exact = best_request(
        device, fitted, args.request_repeats, indices=removed, method="exact"
    )
    report = dg.last_update_
    n_iterations = fitted._schedule.n_iterations
    _, ceiling = ceilings(
        n_iterations, report.first_iteration, fitted.burn_in, fitted.exact_period
    )
    w0 = np.append(fitted.coef_, fitted.intercept_)
    w_dg = np.append(dg.coef_, dg.intercept_)
    w_u = np.append(exact.coef_, exact.intercept_)
    row.update(
        deltagrad_s=dg_s,
        exact_s=exact_s,
        speedup=exact_s / dg_s,
        ceiling=ceiling,
        share=exact_s / dg_s / ceiling,
        fidelity=np.linalg.norm(w_dg - w_u) / np.linalg.norm(w0 - w_u),
        n_iterations=n_iterations,
        n_approximate=report.n_approximate_iterations,
    )
    return row, fitted


def launch_overhead(repeats=2000):
    """Microseconds per launch of a one-block kernel (host side, queue kept busy)."""
    from numba import cuda

    from sklearn_deltagrad._kernels import cuda as kernels

    v = cuda.device_array(8)
    kernels.fill(v, 0.0)  # compile
    seconds, _ = timed("cuda", lambda: [kernels.fill(v, 1.0) for _ in range(repeats)])
    return seconds / repeats * 1e6


def profile_request(fitted, removed, path, n_lines=30):
    """cProfile of one CUDA ``partial_unfit``: where the host spends its time."""
    import cProfile
    import io
    import pstats

    model = copy.deepcopy(fitted)
    profiler = cProfile.Profile()
    profiler.enable()
    model.partial_unfit(indices=removed)
    synchronize("cuda")
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    for order in ("cumulative", "tottime"):
        stats.sort_stats(order).print_stats(n_lines)
    with open(path, "w") as handle:
        handle.write(stream.getvalue())


def kernel_times(fitted, removed):
    """Per kernel, launches and synchronised seconds in a DeltaGrad request and an
    exact retrain (each launch waited for: the sum is the GPU's busy time plus the
    host's launch overhead, not the request's time)."""
    timer = KernelLaunches(timed=True)
    table = {}
    for label, request in (("deltagrad", {}), ("exact", {"method": "exact"})):
        timer.reset()
        copy.deepcopy(fitted).partial_unfit(indices=removed, **request)
        for name, count in timer.counts.items():
            table.setdefault(name, {})[label] = (count, timer.seconds[name])
    timer.restore()
    lines = [
        "| kernel | DeltaGrad launches | ms | us/launch | exact launches | ms "
        "| us/launch |",
        "|---|---|---|---|---|---|---|",
    ]
    totals = {"deltagrad": 0.0, "exact": 0.0}
    for name, by_label in sorted(table.items()):
        cells = [name]
        for label in ("deltagrad", "exact"):
            count, seconds = by_label.get(label, (0, 0.0))
            totals[label] += seconds
            per = seconds / count * 1e6 if count else 0.0
            cells += [str(count), f"{seconds * 1e3:.2f}", f"{per:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"| total | | {totals['deltagrad'] * 1e3:.1f} | | | "
        f"{totals['exact'] * 1e3:.1f} | |"
    )
    return "\n".join(lines)


def launches_per_iteration(args, X, y, removed):
    """Kernel launches per iteration: of ``fit``, of the exact retrain, and of the
    replay's exact and approximate iterations (a replay with ``exact_period=1``,
    all exact, gives the former; the default replay's remainder the latter)."""
    fitted = estimator(args, "cuda").fit(X, y)
    counter = KernelLaunches()
    n_fit = fitted._schedule.n_iterations

    def launches(**request):
        counter.reset()
        updated = copy.deepcopy(fitted).partial_unfit(indices=removed, **request)
        report = updated.last_update_
        return counter.count, report.n_exact_iterations, report.n_approximate_iterations

    counter.reset()
    estimator(args, "cuda").fit(X, y)
    per_fit = counter.count / n_fit
    count, n_exact, _ = launches(method="exact")
    per_exact_retrain = count / max(n_exact, 1)
    fitted.set_params(exact_period=1)
    count, n_exact, _ = launches()
    per_exact = count / max(n_exact, 1)
    fitted.set_params(exact_period=estimator(args, "cuda").exact_period)
    count, n_exact, n_approximate = launches()
    per_approximate = (count - n_exact * per_exact) / max(n_approximate, 1)
    counter.restore()
    return {
        "fit": per_fit,
        "exact retrain": per_exact_retrain,
        "replay, exact iteration": per_exact,
        "replay, approximate iteration (estimated)": per_approximate,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=60000)
    parser.add_argument("--n-features", type=int, default=784)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--removal", type=float, default=1e-3)
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--request-repeats", type=int, default=3, help="requests timed (the best)"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="write a cProfile of one CUDA request here"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a smoke-test size (for the simulator)"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.n_samples, args.n_features, args.epochs = 200, 6, 4
        args.batch_size, args.removal, args.repeats = 50, 0.02, 1
        args.request_repeats = 1
    X, y = make_data(args.n_samples, args.n_features, args.n_classes)
    n_removed = max(1, int(round(args.removal * args.n_samples)))
    removed = np.random.default_rng(2).choice(args.n_samples, n_removed, replace=False)
    print(
        f"# CUDA vs CPU: {args.n_samples} x {args.n_features} float64, "
        f"{args.n_classes} classes, {args.epochs} epochs, batch {args.batch_size}, "
        f"removing {n_removed} rows\n"
    )
    rows, fitted_cuda = [], None
    for device in args.devices:
        print(f"running {device} ...", file=sys.stderr)
        row, fitted = run_device(args, device, X, y, removed)
        rows.append(row)
        if device == "cuda":
            fitted_cuda = fitted
    keys = [
        "device", "compile_s", "fit_s", "deltagrad_s", "exact_s", "speedup",
        "ceiling", "share", "fidelity", "n_iterations", "n_approximate",
    ]  # fmt: skip
    print(markdown_table(keys, [[row[k] for k in keys] for row in rows]))
    by_device = {row["device"]: row for row in rows}
    if {"cuda", "cpu"} <= by_device.keys():
        cpu, gpu = by_device["cpu"], by_device["cuda"]
        print("\n| CPU / CUDA time | fit | partial_unfit | exact |\n|---|---|---|---|")
        print(
            f"| ratio | {cpu['fit_s'] / gpu['fit_s']:.3g} | "
            f"{cpu['deltagrad_s'] / gpu['deltagrad_s']:.3g} | "
            f"{cpu['exact_s'] / gpu['exact_s']:.3g} |"
        )
    if fitted_cuda is not None:
        seconds, rate = gradient_bandwidth(fitted_cuda, X, y, args.repeats)
        print(
            f"\nBatch gradient ({min(args.batch_size, args.n_samples)} rows): "
            f"{seconds * 1e3:.3f} ms, {rate / 1e9:.1f} GB/s of rows read"
        )
        print(f"\nKernel launch overhead: {launch_overhead():.1f} us per launch")
        if args.profile:
            profile_request(fitted_cuda, removed, args.profile)
        print("\nSynchronised time per kernel, one request each:\n")
        print(kernel_times(fitted_cuda, removed))
        launches = launches_per_iteration(args, X, y, removed)
        print("\n| kernel launches per iteration | |\n|---|---|")
        for name, value in launches.items():
            print(f"| {name} | {value:.3g} |")


if __name__ == "__main__":
    main()
