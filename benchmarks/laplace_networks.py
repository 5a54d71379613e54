"""Laplace on a trained network, post-hoc: pyebm against laplace-torch on the same network (the anchor).

Regression: an MLP (1-50-50-1, tanh) trained on a noisy sine observed on two intervals (laplace-torch's own
example, with a gap); classification: an MLP on scikit-learn's digits. Both libraries take the last layer's
posterior at the trained weights (post-hoc, no re-fit) under a zero-mean prior N(0, 1/delta), the generalised
Gauss-Newton in full (pyebm.Laplace(hessian="ggn"); for a last layer the network is linear in the weights, so it is
also pyebm's exact Hessian, as tests/inference/test_gauss_newton.py checks): the precisions, the log marginal
likelihoods (up to the Gaussian likelihood's constant, which pyebm's energy leaves out) and the GLM predictives must
agree to round-off. Then each tunes the prior
precision by its own evidence maximisation, and the test NLL / ECE / accuracy and the fit and predict times are put
side by side. Last, every weight: both take the GGN in full, diagonal and Kronecker-factored (K-FAC) structures
(pyebm.Laplace(hessian="ggn", structure=...)), which must agree too, with times and peak memory side by side. A
small CNN on the digits checks K-FAC's convolution factors.

    pip install laplace-torch           # optional: only this benchmark needs it (then pip install torch==2.13.0:
                                        # its requirements upgrade torch to a CUDA build)
    python benchmarks/laplace_networks.py

laplace-torch 0.3 pulls torchvision, whose PyPI wheel does not load against the CPU torch wheel; uninstalling
torchvision leaves laplace-torch working (it does not need it here).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import sys
import time
import warnings

import torch
from torch.utils.data import DataLoader, TensorDataset

import pyebm
from pyebm import ttt
from pyebm.metrics import classification_metrics

warnings.filterwarnings("ignore", category=pyebm.ConvergenceWarning)  # post-hoc at trained weights: off-mode by design


def _timed(fn, repeats: int = 3):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, sorted(times)[len(times) // 2]


def _timed_pair(fn_a, fn_b, repeats: int = 5, least: float = 0.05):
    """Both functions timed in alternation (a, b, a, b, ...), medians of ``repeats`` samples: each sees the same share
    of a noisy machine's load, so their ratio holds where the absolute times do not. A sample of a call shorter than
    ``least`` seconds times as many calls as fill it (the time per call reported): one call of a few milliseconds is
    mostly the machine's noise. The first call of each, timed, sets that number and warms up."""
    out, once = [None, None], [0.0, 0.0]
    for i, fn in enumerate((fn_a, fn_b)):
        start = time.perf_counter()
        out[i] = fn()
        once[i] = time.perf_counter() - start
    loops = [max(1, math.ceil(least / t)) for t in once]
    times = ([once[0]], [once[1]]) if loops == [1, 1] else ([], [])  # slow calls: the first counts as a sample
    while len(times[0]) < repeats:
        for i, fn in enumerate((fn_a, fn_b)):
            start = time.perf_counter()
            for _ in range(loops[i]):
                out[i] = fn()
            times[i].append((time.perf_counter() - start) / loops[i])
    return [(o, sorted(t)[len(t) // 2]) for o, t in zip(out, times)]


def _train(net, x, y, loss_fn, steps: int, lr: float = 1e-2):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _pyebm_posterior(net, data, last, energy, delta, hessian="full", structure=None):
    trained = {k: v.detach() for k, v in net.named_parameters() if k in last}
    return ttt.adapt(net, data, last, energy, pyebm.Laplace(at=trained, hessian=hessian, structure=structure),
                     prior_scale=delta**-0.5, prior_mean="zero", seed=0)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_mib(fn) -> float:
    """Peak memory (MiB) that ``fn()`` adds to the process: the resident set's high-water mark, reset first (Linux's
    ``clear_refs``), less the resident set before the call (torch's CPU allocations are invisible to tracemalloc;
    large blocks go back to the system when freed, so earlier calls do not hide this one's peak)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - start) / 1024


def _print_peaks(fit_la, fit_pe) -> None:
    """The fits' peak memory side by side (a line of the last-layer summaries)."""
    mem_la, mem_pe = _peak_mib(fit_la), _peak_mib(fit_pe)
    print(f"peak MiB of the fit                 laplace-torch {_mib(mem_la)}   pyebm {_mib(mem_pe)}"
          + (f"   ratio {mem_pe / mem_la:.2f}" if min(mem_la, mem_pe) >= 1 else ""))


def _mib(value: float) -> str:
    """A peak in MiB; below 1 MiB the resident set cannot tell it from other allocations."""
    return f"{value:7.1f}" if value >= 1 else "   < 1 "


def all_weights(laplace_cls, net, data, test, energy, likelihood, delta, constant, noise=1.0) -> None:
    """Every weight, the generalised Gauss-Newton in each structure both libraries have (full, diagonal, K-FAC), at
    the trained weights: precisions (K-FAC: its Kronecker factors), evidence, the GLM predictive's agreement, fit and
    predict times and peak memory against laplace-torch (its default GGN curvature, curvlinops backend)."""
    names = [k for k, _ in net.named_parameters()]
    (test_x, test_y), dim = test, sum(p.numel() for p in net.parameters())
    print(f"\n# {likelihood}: all {dim} weights, GGN, prior precision {delta}, at the trained weights")
    print("structure  precision    factors      log ML rel   pred mean    pred var/p   fit s (ratio)          "
          "predict s (ratio)        peak MiB (ratio)")
    tuned = [_structure_row(laplace_cls, net, data, test_x, test_y, names, energy, likelihood, delta, constant, noise,
                            structure) for structure in ("full", "diag", "kron")]
    print("\n".join(t for t in tuned if t))


def _structure_row(laplace_cls, net, data, test_x, test_y, names, energy, likelihood, delta, constant, noise,
                   structure):
    """One row of :func:`all_weights`: both libraries' Laplace in one structure, compared and timed."""
    x, y = data

    def fit_la():
        la = laplace_cls(net, likelihood, subset_of_weights="all", hessian_structure=structure,
                         sigma_noise=noise, prior_precision=delta)
        la.fit(DataLoader(TensorDataset(x, y[:, None] if likelihood == "regression" else y), batch_size=len(x)))
        return la

    def fit_pe():
        return _pyebm_posterior(net, data, names, energy, delta, hessian="ggn", structure=structure)

    (la, t_la), (post, t_pe) = _timed_pair(fit_la, fit_pe)
    mem_la, mem_pe = _peak_mib(fit_la), _peak_mib(fit_pe)
    s = post.approximation.structure
    factors = "-"
    if structure == "full":
        P_la, P_pe = la.posterior_precision.detach(), _precision_of(post)
    elif structure == "diag":
        P_la, P_pe = la.posterior_precision.detach(), 1 / s.variance()
    else:  # compare the Kronecker factors themselves, then the precision they stand for
        worst, h = 0.0, float(la._H_factor)  # laplace-torch scales its factors by 1 / sigma^2 when it uses them

        def rel(mine, theirs):
            return float((mine - theirs).abs().max() / theirs.abs().max())

        for (B, A, _), F in zip(post.diagnostics["hessian"].values(), la.H_facs.kfacs):
            if A is None:
                worst = max(worst, rel(B, h * F[0]))
            else:  # a pair is defined up to a scalar moved between its factors (laplace-torch splits its 1/2 so)
                c = float(B.norm() / F[0].norm())
                worst = max(worst, rel(B, c * F[0]), rel(A, h / c * F[1]))
        factors = f"{worst:.1e}"
        P_la, P_pe = la.posterior_precision.to_matrix().detach(), torch.linalg.inv(s.covariance())
    lml_la, lml_pe = float(la.log_marginal_likelihood()), post.log_evidence - constant
    if likelihood == "regression":
        ((mu_la, var_la), tp_la), ((mu_pe, var_pe), tp_pe) = _timed_pair(
            lambda: la(test_x, pred_type="glm"), lambda: ttt.predict(net, post, test_x, likelihood="regression",
                                                            pred_type="glm"))
        mean_diff = float((mu_la[:, 0] - mu_pe[:, 0]).abs().max())
        var_diff = float(((var_la[:, 0, 0] - var_pe[:, 0]) / var_la[:, 0, 0]).abs().max())
    else:
        (p_la, tp_la), (p_pe, tp_pe) = _timed_pair(
            lambda: la(test_x, pred_type="glm", link_approx="probit"),
            lambda: ttt.predict(net, post, test_x, pred_type="glm", link_approx="probit"))
        mean_diff, var_diff = None, float((p_la - p_pe).abs().max())
    tuned = _tuned_kron(la, net, data, test_x, test_y, names, energy, likelihood, noise) if structure == "kron" else None
    mean_col = "-      " if mean_diff is None else f"{mean_diff:.1e}"  # classification: probabilities only
    print(f"{structure:10s} {float((P_la - P_pe).abs().max() / P_la.abs().max()):.1e}      {factors:12s} "
          f"{abs(lml_la - lml_pe) / abs(lml_la):.1e}      {mean_col}      {var_diff:.1e}      "
          f"{t_la:7.3f} {t_pe:7.3f} ({t_pe / t_la:4.2f})  {tp_la:7.4f} {tp_pe:7.4f} ({tp_pe / tp_la:4.2f})  "
          f"{_mib(mem_la)} {_mib(mem_pe)}" + (f" ({mem_pe / mem_la:4.2f})" if min(mem_la, mem_pe) >= 1 else ""))
    return tuned


def _tuned_kron(la, net, data, test_x, test_y, names, energy, likelihood, noise) -> str:
    """K-FAC over every weight with the prior precision tuned by each library's evidence: the precision chosen, the
    time, and the test metrics of the GLM predictive (a line printed after the structure table)."""

    def tune_la():
        la.optimize_prior_precision(method="marglik", n_steps=300, lr=0.1)
        return la

    trained = {k: v.detach() for k, v in net.named_parameters()}
    la_t, t_la = _timed(tune_la, 1)
    post, t_pe = _timed(lambda: ttt.adapt(net, data, names, energy, pyebm.Laplace(at=trained, hessian="kron"),
                                          prior_scale="evidence", prior_mean="zero", seed=0), 1)
    d_la, d_pe = float(la_t.prior_precision.reshape(-1)[0]), post.diagnostics["prior_scale"][names[0]] ** -2
    if likelihood == "regression":
        (mu_a, var_a), (mu_b, var_b) = la_t(test_x, pred_type="glm"), ttt.predict(
            net, post, test_x, likelihood="regression", pred_type="glm")
        metrics = [f"test NLL {float(-torch.distributions.Normal(m, (v + noise**2).sqrt()).log_prob(test_y).mean()):.4f}"
                   for m, v in ((mu_a[:, 0], var_a[:, 0, 0]), (mu_b[:, 0], var_b[:, 0]))]
    else:
        metrics = []
        for p in (la_t(test_x, pred_type="glm", link_approx="probit"),
                  ttt.predict(net, post, test_x, pred_type="glm", link_approx="probit")):
            m = classification_metrics(p, test_y)
            metrics.append(f"acc {m['acc']:.2f}% NLL {m['nll']:.4f} ECE {m['ece']:.2f}%")
    return (f"K-FAC, evidence-tuned prior precision   laplace-torch {d_la:.4f} ({t_la:.2f} s; {metrics[0]})   "
            f"pyebm {d_pe:.4f} ({t_pe:.2f} s; {metrics[1]})")


def _tuned(fit_la, net, data, last, energy):
    """Both libraries' evidence-tuned prior precision at the trained weights, timed: (laplace-torch's fit, its
    seconds, pyebm's posterior, its seconds)."""

    def tuned_la():
        la = fit_la()
        la.optimize_prior_precision(method="marglik", n_steps=300, lr=0.1)
        return la

    trained = {k: v.detach() for k, v in net.named_parameters() if k in last}
    la_t, t_la = _timed(tuned_la, 1)
    post_t, t_pe = _timed(lambda: ttt.adapt(net, data, last, energy, pyebm.Laplace(at=trained, hessian="ggn"),
                                            prior_scale="evidence", prior_mean="zero", seed=0), 1)
    return la_t, t_la, post_t, t_pe


def _precision_of(post):
    return torch.as_tensor(post.diagnostics["hessian"])


def regression(laplace_cls) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(60, 1, generator=g) * 4 - 6, torch.rand(60, 1, generator=g) * 4 + 2])
    y = torch.sin(x[:, 0]) + 0.2 * torch.randn(120, generator=g)
    xt = torch.rand(500, 1, generator=g) * 12 - 6
    yt = torch.sin(xt[:, 0]) + 0.2 * torch.randn(500, generator=g)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 50), torch.nn.Tanh(), torch.nn.Linear(50, 50), torch.nn.Tanh(),
                              torch.nn.Linear(50, 1))
    _train(net, x, y[:, None], torch.nn.functional.mse_loss, 3000)
    last, noise, delta = ["4.weight", "4.bias"], 0.2, 1.0

    def fit_la():
        la = laplace_cls(net, "regression", subset_of_weights="last_layer", hessian_structure="full",
                         sigma_noise=noise, prior_precision=delta)
        la.fit(DataLoader(TensorDataset(x, y[:, None]), batch_size=120))
        return la

    (la, t_la), (post, t_pe) = _timed_pair(fit_la, lambda: _pyebm_posterior(
        net, (x, y), last, ttt.supervised("squared", noise), delta, hessian="ggn"))
    P_la, P_pe = la.posterior_precision.detach(), _precision_of(post)
    constant = 0.5 * len(y) * math.log(2 * math.pi * noise**2)  # the likelihood's normaliser, not in the energy
    lml_la = float(la.log_marginal_likelihood())
    lml_pe = post.log_evidence - constant
    ((mu_la, var_la), tp_la), ((mu_pe, var_pe), tp_pe) = _timed_pair(
        lambda: la(xt, pred_type="glm"), lambda: ttt.predict(net, post, xt, likelihood="regression", pred_type="glm"))
    print("\n# regression: last layer (51 weights), GGN in full, prior precision 1, at the trained weights")
    print(f"precision max |diff| / max |P|      {float((P_la - P_pe).abs().max() / P_la.abs().max()):.1e}")
    print(f"log marginal likelihood             laplace-torch {lml_la:.6f}   pyebm {lml_pe:.6f}   "
          f"diff {abs(lml_la - lml_pe):.1e}")
    print(f"GLM predictive mean max |diff|      {float((mu_la[:, 0] - mu_pe[:, 0]).abs().max()):.1e}")
    print(f"GLM predictive var max rel diff     "
          f"{float(((var_la[:, 0, 0] - var_pe[:, 0]) / var_la[:, 0, 0]).abs().max()):.1e}")
    print(f"fit s (median of 5)                 laplace-torch {t_la:.3f}   pyebm {t_pe:.3f}   ratio {t_pe / t_la:.2f}")
    print(f"predict s, 500 points               laplace-torch {tp_la:.4f}   pyebm {tp_pe:.4f}   "
          f"ratio {tp_pe / tp_la:.2f}")
    _print_peaks(fit_la, lambda: _pyebm_posterior(net, (x, y), last, ttt.supervised("squared", noise), delta,
                                                  hessian="ggn"))

    la_t, tt_la, post_t, tt_pe = _tuned(fit_la, net, (x, y), last, ttt.supervised("squared", noise))
    d_la = float(la_t.prior_precision.reshape(-1)[0])
    d_pe = post_t.diagnostics["prior_scale"]["4.weight"] ** -2

    def nll(mu, var):
        return float(-torch.distributions.Normal(mu, (var + noise**2).sqrt()).log_prob(yt).mean())

    mu_a, var_a = la_t(xt, pred_type="glm")
    mu_b, var_b = ttt.predict(net, post_t, xt, likelihood="regression", pred_type="glm")
    print(f"evidence-tuned prior precision      laplace-torch {d_la:.4f} ({tt_la:.2f} s)   pyebm {d_pe:.4f} "
          f"({tt_pe:.2f} s)")
    print(f"test NLL (500 points, gap included) laplace-torch {nll(mu_a[:, 0], var_a[:, 0, 0]):.4f}   pyebm "
          f"{nll(mu_b[:, 0], var_b[:, 0]):.4f}   MAP plug-in "
          f"{nll(net(xt)[:, 0].detach(), torch.zeros(500)):.4f}")
    all_weights(laplace_cls, net, (x, y), (xt, yt), ttt.supervised("squared", noise), "regression", delta, constant, noise)


def classification(laplace_cls) -> None:
    from pyebm.examples import digits

    (x, y), _, (xt, yt) = digits.load(0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))
    _train(net, x, y, torch.nn.functional.cross_entropy, 1000)
    last, delta = ["3.weight", "3.bias"], 1.0

    def fit_la():
        la = laplace_cls(net, "classification", subset_of_weights="last_layer", hessian_structure="full",
                         prior_precision=delta)
        la.fit(DataLoader(TensorDataset(x, y), batch_size=1000))
        return la

    (la, t_la), (post, t_pe) = _timed_pair(fit_la, lambda: _pyebm_posterior(
        net, (x, y), last, ttt.supervised("cross_entropy"), delta, hessian="ggn"))
    P_la, P_pe = la.posterior_precision.detach(), _precision_of(post)
    # laplace-torch orders the last layer's weights then its bias, as pyebm does; both flatten row-major
    (probs_la, tp_la), (probs_pe, tp_pe) = _timed_pair(
        lambda: la(xt, pred_type="glm", link_approx="probit"),
        lambda: ttt.predict(net, post, xt, pred_type="glm", link_approx="probit"))
    print("\n# classification: digits, last layer (650 weights), GGN in full, prior precision 1, trained weights")
    print(f"precision max |diff| / max |P|      {float((P_la - P_pe).abs().max() / P_la.abs().max()):.1e}")
    print(f"log marginal likelihood             laplace-torch {float(la.log_marginal_likelihood()):.4f}   pyebm "
          f"{post.log_evidence:.4f}")
    print(f"probit predictive max |diff|        {float((probs_la - probs_pe).abs().max()):.1e}")
    print(f"fit s (median of 5)                 laplace-torch {t_la:.3f}   pyebm {t_pe:.3f}   ratio {t_pe / t_la:.2f}")
    print(f"predict s, 497 digits               laplace-torch {tp_la:.4f}   pyebm {tp_pe:.4f}   "
          f"ratio {tp_pe / tp_la:.2f}")
    _print_peaks(fit_la, lambda: _pyebm_posterior(net, (x, y), last, ttt.supervised("cross_entropy"), delta,
                                                  hessian="ggn"))
    la_t, tt_la, post_t, tt_pe = _tuned(fit_la, net, (x, y), last, ttt.supervised("cross_entropy"))
    print(f"evidence-tuned prior precision      laplace-torch {float(la_t.prior_precision.reshape(-1)[0]):.4f} "
          f"({tt_la:.2f} s)   pyebm {post_t.diagnostics['prior_scale']['3.weight'] ** -2:.4f} ({tt_pe:.2f} s)")
    with torch.no_grad():
        plug = torch.softmax(net(xt), -1)
    rows = [("MAP plug-in", plug), ("laplace-torch GLM probit", probs_la), ("pyebm GLM probit", probs_pe),
            ("laplace-torch, tuned prior", la_t(xt, pred_type="glm", link_approx="probit")),
            ("pyebm, tuned prior", ttt.predict(net, post_t, xt, pred_type="glm", link_approx="probit"))]
    for name, p in rows:
        m = classification_metrics(p, yt)
        print(f"{name:28s} acc {m['acc']:6.2f}%   NLL {m['nll']:.4f}   ECE {m['ece']:5.2f}%")
    all_weights(laplace_cls, net, (x, y), (xt, yt), ttt.supervised("cross_entropy"), "classification", delta, 0.0)


def convolution(laplace_cls) -> None:
    """A small CNN on the digits (8x8 images), K-FAC over every weight: the convolutions' Kronecker factors against
    laplace-torch's (both "expand" K-FAC over the unfolded patches), and each library's bias blocks against the
    exact GGN's (pyebm keeps a convolution's bias block exact: each example's positions summed before the outer
    product; laplace-torch treats every position as an example there)."""
    from pyebm.examples import digits

    (x, y), _, _ = digits.load(0)
    x = x.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(72, 10))
    _train(net, x, y, torch.nn.functional.cross_entropy, 300)
    names = [k for k, _ in net.named_parameters()]
    energy = ttt.supervised("cross_entropy")

    def fit_la():
        la = laplace_cls(net, "classification", subset_of_weights="all", hessian_structure="kron", prior_precision=1.0)
        la.fit(DataLoader(TensorDataset(x, y), batch_size=len(x)))
        return la

    (la, t_la), (post, t_pe) = _timed_pair(fit_la, lambda: _pyebm_posterior(net, (x, y), names, energy, 1.0,
                                                                            hessian="kron"))
    mem_la, mem_pe = _peak_mib(fit_la), _peak_mib(lambda: _pyebm_posterior(net, (x, y), names, energy, 1.0,
                                                                            hessian="kron"))
    trained = {k: v.detach() for k, v in net.named_parameters()}
    biases = [n for n in names if n.endswith("bias")]
    exact = _precision_of(ttt.adapt(net, (x, y), biases, energy, pyebm.Laplace(at={k: trained[k] for k in biases},
                                                                                  hessian="ggn"),
                                    prior_scale=1.0, prior_mean="zero", seed=0))  # the biases' dense GGN + prior
    h, start = float(la._H_factor), 0
    print(f"\n# classification: digits CNN (conv 1-8 3x3 pad 1, conv 8-8 3x3 stride 2, linear 72-10; "
          f"{sum(p.numel() for p in net.parameters())} weights), K-FAC, prior precision 1, at the trained weights")
    print("parameter   factors vs laplace-torch   bias block vs exact GGN: pyebm   laplace-torch")
    for (name, (B, A, _)), F in zip(post.diagnostics["hessian"].items(), la.H_facs.kfacs):
        if A is None:
            k = B.shape[0]
            block = exact[start : start + k, start : start + k]
            eye = torch.eye(k)
            start += k
            mine, theirs = ((float((P + eye - block).abs().max() / block.abs().max())) for P in (B, h * F[0]))
            print(f"{name:10s}  -                         {mine:.1e}                       {theirs:.1e}")
        else:
            c = float(B.norm() / F[0].norm())
            worst = max(float((B - c * F[0]).abs().max() / (c * F[0]).abs().max()),
                        float((A - h / c * F[1]).abs().max() / (h / c * F[1]).abs().max()))
            print(f"{name:10s}  {worst:.1e}")
    print(f"log marginal likelihood   laplace-torch {float(la.log_marginal_likelihood()):.4f}   pyebm "
          f"{post.log_evidence:.4f} (apart by the bias blocks)")
    print(f"fit s (median of 5)       laplace-torch {t_la:.3f}   pyebm {t_pe:.3f}   ratio {t_pe / t_la:.2f}")
    print(f"peak MiB                  laplace-torch {_mib(mem_la)}   pyebm {_mib(mem_pe)}")


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # every block above 64 KiB its own mapping, unmapped when
        # freed: the resident set then follows live memory, and the peak-memory column measures each fit alone
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    try:
        import laplace
        from laplace import Laplace
    except ImportError as err:
        sys.exit(f"this benchmark needs laplace-torch (pip install laplace-torch): {err}")
    torch.set_default_dtype(torch.float64)
    print(f"# pyebm {pyebm.__version__}, laplace-torch {getattr(laplace, '__version__', '0.3')}, torch "
          f"{torch.__version__}, python {sys.version.split()[0]}, {platform.platform()}, {os.cpu_count()} cpus")
    regression(Laplace)
    classification(Laplace)
    convolution(Laplace)


if __name__ == "__main__":
    main()
