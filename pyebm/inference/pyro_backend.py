r"""The Pyro backend: a thin adapter between Pyro models and pyebm's algorithms.

It builds a :class:`~pyebm.inference.potential.Potential` from a Pyro model on Pyro's own ``initialize_model`` (plates,
``obs=``, constrained supports, enumeration of discrete sites, ``pyro.param`` read from the store), or directly from
an energy model's closed form (one batched energy call, no trace). It drives Pyro's HMC/NUTS and SVI, and gives a
:class:`~pyebm.inference.result.Posterior` its model side (:class:`PyroModelView`): deterministic and discrete sites,
the posterior predictive, pointwise log-likelihoods and observed data.
"""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer import infer_discrete
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median, init_to_value
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from ..diagnostics import NonFiniteEnergyError, check_energy, warn
from ..energy import ENERGY_FACTOR_KEY
from ..handlers import outside_handlers
from ..ops import NO_GRADIENT, TORCH
from ..state import isolated_param_store, seeded
from .potential import Potential, Site

__all__ = ["PyroBackend", "PYRO", "PyroModelView", "learnable_energy_parameters", "given_point_graph",
           "nonfinite_point"]


def _on_reals(transform) -> bool:
    t = transform
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return isinstance(t, ComposeTransform) and not t.parts


def _strategy(init, names: list[str] | None = None):
    """A Pyro init strategy from ``init``: None (the median), a dict of values (checked) or a strategy."""
    if init is None:
        return init_to_median
    if isinstance(init, dict):
        if names is not None:
            unknown = sorted(set(init) - set(names))
            if unknown:
                raise ValueError(f"init names {unknown}, which are not latent sites of the model ({names}).")
        return init_to_value(values={k: torch.as_tensor(v) for k, v in init.items()})
    if callable(init):
        return init
    raise TypeError(f"init must be None, a dict of site values or a Pyro init strategy, got {type(init).__name__}.")


def _prototype(model, args, kwargs, strategy) -> pyro.poutine.Trace:
    with poutine.block(), pyro.validation_enabled(False):
        return poutine.trace(InitMessenger(strategy)(model)).get_trace(*args, **kwargs)


def _latent_nodes(trace) -> list[tuple[str, dict]]:
    return [(name, node) for name, node in trace.nodes.items()
            if node["type"] == "sample" and not node["is_observed"] and not isinstance(node["fn"], _Subsample)
            and not node["infer"].get("is_auxiliary")]


def subsampled_plates(trace) -> list[str]:
    """Names of the plates that draw a subsample smaller than their size."""
    return [name for name, node in trace.nodes.items()
            if node["type"] == "sample" and isinstance(node["fn"], _Subsample)
            and node["fn"].subsample_size is not None and node["fn"].subsample_size < node["fn"].size]


def _check_init_shapes(init, trace) -> None:
    if isinstance(init, dict):
        for k, v in init.items():
            want = tuple(trace.nodes[k]["fn"].shape())  # the site's own shape (a given value may be its value)
            if tuple(torch.as_tensor(v).shape) != want:
                raise ValueError(f"init['{k}'] has shape {tuple(torch.as_tensor(v).shape)}, but site '{k}' has "
                                 f"shape {want}.")


def traced_potential(model, args, kwargs, init, jit_compile: bool, what: str) -> Potential:
    """The potential of any Pyro model, on Pyro's ``initialize_model``: enumerated discrete sites summed out
    (the β = 1 free energy over them), plates and scales respected, params read from the store. Where ``init`` gives
    the whole point, from one trace of the model there (:func:`_given_point`)."""
    given = _given_point(model, args, kwargs, init, what) if isinstance(init, dict) and not jit_compile else None
    if given is not None:
        return given
    probe = _prototype(model, args, kwargs, init_to_median)
    latent = dict(_latent_nodes(probe))
    continuous = [k for k, n in latent.items() if not n["fn"].support.is_discrete]
    enumerated = [k for k in latent if k not in continuous]
    for k, n in latent.items():
        if n["fn"].support.is_discrete and not n["fn"].has_enumerate_support:
            raise ValueError(
                f"site '{k}' is discrete ({type(n['fn']).__name__}) with no finite support to enumerate. pyebm sums "
                "discrete latents out by enumeration (the beta = 1 free energy over them); give it a finite support "
                "(Categorical, Bernoulli, a truncated count) or marginalise it in the model."
            )
    strategy = _strategy(init, continuous)
    _check_init_shapes(init, probe)
    plates = subsampled_plates(probe)
    if not continuous:
        raise ValueError("the model has no continuous latent sample sites: there is nothing to infer"
                         + (" (its discrete sites are summed out)." if latent else "."))
    refusal = None
    if plates:
        refusal = (f"{what}: this model subsamples plate(s) {plates}: its energy is then a random estimate, which "
                   "MAP, Laplace and MCMC cannot use. Use method='svi', or the full data (subsample_size=None).")
        proto = _prototype(model, args, kwargs, strategy)
        sites = [_site(k, proto.nodes[k], biject_to(proto.nodes[k]["fn"].support)) for k in continuous]
        values = [s.transform.inv(proto.nodes[s.name]["value"].detach()).reshape(-1) for s in sites]
        return Potential(sites, torch.cat(values), TORCH, _refused(refusal), batched=False, refusal=refusal)
    try:
        with pyro.validation_enabled(False):
            initial, pe_fn, transforms, proto = initialize_model(
                model, args, kwargs, init_strategy=strategy, jit_compile=jit_compile, skip_jit_warnings=True)
    except RuntimeError as err:
        if "does not require grad" not in str(err):
            raise
        raise ValueError(f"{what}: {NO_GRADIENT}") from None
    except ValueError as err:
        if "cannot find valid initial params" not in str(err):
            raise
        raise ValueError(
            f"{what}: the model's energy is not finite at its initial point (nor at 100 draws from the prior): "
            f"{_nonfinite_sites(model, args, kwargs, strategy)}. Check the energy for log(0), division by zero or "
            "overflow there, or pass `init` where it is finite."
        ) from None
    sites = [_site(k, proto.nodes[k], transforms[k].inv) for k in transforms]
    u0 = torch.cat([initial[s.name].detach().reshape(-1) for s in sites])

    def evaluate(u: torch.Tensor, jacobian: bool) -> torch.Tensor:
        params = {s.name: v for s, v in zip(sites, _unpack(sites, u[0]))}
        with pyro.validation_enabled(False):
            value = pe_fn(params)
        if not jacobian:
            for s in sites:
                if not s.on_reals:
                    value = value + s.transform.log_abs_det_jacobian(params[s.name], s.transform(params[s.name])).sum()
        return value.reshape(1)

    def potential_fn(params: dict) -> torch.Tensor:
        with pyro.validation_enabled(False):
            return pe_fn(params)

    one_point = (f"the model has enumerated discrete sites {enumerated}" if enumerated
                 else _traced_one_point(model, args, kwargs, sites))
    many_points = None
    if enumerated:
        neg_log_joint = _enumerated_neg_log_joint(model, args, kwargs, sites, probe)

        def many_points(u: torch.Tensor, jacobian: bool) -> torch.Tensor:
            energy = neg_log_joint(u)
            return energy - potential.log_abs_det_jacobian(u) if jacobian else energy

    potential = Potential(sites, u0, TORCH, evaluate, batched=False, potential_fn=potential_fn, one_point=one_point,
                          many_points=many_points)
    return potential.restricted(_unmasked(sites, proto))


def _given_point(model, args, kwargs, init: dict, what: str, graph: bool = False) -> Potential | None:
    """The potential of a model whose every latent site ``init`` gives (all continuous, no subsampled plate), from one
    trace of the model at those values: no search for a valid initial point, which is what Pyro's
    ``initialize_model`` adds (its probe, its trace and its potential with gradient at the point: most of the time of a
    post-hoc Laplace of a small network). None where ``init`` does not give the whole point (the general path then
    checks its names); a ValueError where the energy is not finite there.

    With ``graph`` (:func:`given_point_graph`), the values are taken as they are (with their graph), and where the
    trace is the graph in the unconstrained point (:func:`_graph_layout`) the energy's finiteness is left to the
    caller, who evaluates it from the trace anyway."""
    values = dict(init) if graph else {k: torch.as_tensor(v).detach() for k, v in init.items()}
    try:
        trace = _prototype(model, args, kwargs, init_to_value(values=values, fallback=init_to_median))
    except Exception:  # noqa: BLE001 - e.g. a value of the wrong shape breaks the model: the general path, which
        return None  # probes at the prior's median, says what was wrong (or raises the model's own error)
    latent = dict(_latent_nodes(trace))
    if (set(latent) != set(values) or any(n["fn"].support.is_discrete for n in latent.values())
            or subsampled_plates(trace)):
        return None
    _check_init_shapes(values, trace)
    sites = [_site(k, n, biject_to(n["fn"].support)) for k, n in latent.items()]
    free = _unmasked(sites, trace)
    checked = graph and _graph_layout(sites, list(values), bool(free.all()))
    u0 = torch.cat([(values[s.name] if s.on_reals else s.transform.inv(values[s.name])).detach().reshape(-1)
                    for s in sites])
    with torch.no_grad(), pyro.validation_enabled(False):
        finite = bool(torch.isfinite(u0).all()) and (checked or bool(torch.isfinite(trace.log_prob_sum())))
    if not finite:
        raise nonfinite_point(model, args, kwargs, values, what)
    one_point = _traced_one_point(model, args, kwargs, sites)

    def evaluate(u: torch.Tensor, jacobian: bool) -> torch.Tensor:
        return one_point(u[0], jacobian).reshape(1)

    return Potential(sites, u0, TORCH, evaluate, batched=False, one_point=one_point, trace=trace).restricted(free)


def _graph_layout(sites: list[Site], order: list[str], unmasked: bool) -> bool:
    """Whether a trace at values that are slices of one leaf, in ``order``, is the graph in the unconstrained point:
    every site on the reals, in that order, no element masked out."""
    return unmasked and [s.name for s in sites] == order and all(s.on_reals for s in sites)


def given_point_graph(model, args, kwargs, init: dict, what: str) -> tuple[Potential, torch.Tensor | None] | None:
    """The potential at a given point (:func:`_given_point`) from a run of the model in the caller's grad mode and
    handlers whose latent values are slices of one leaf ``v`` that requires grad, in ``init``'s order: ``(potential,
    v)``, the potential's trace that run, its graph in the unconstrained point, and the energy's finiteness not
    checked (a caller reading the trace evaluates it; :func:`nonfinite_point` says where it is not). Where the trace
    cannot be that graph (a site off the reals or in another order, masked elements), ``(potential, None)``; None
    where ``init`` is not the whole point."""
    values = {k: torch.as_tensor(v).detach() for k, v in init.items()}
    if not values:
        return None
    leaf = torch.cat([v.reshape(-1) for v in values.values()]).requires_grad_(True)
    parts = leaf.split([v.numel() for v in values.values()])
    potential = _given_point(model, args, kwargs, {k: p.reshape(v.shape) for (k, v), p in zip(values.items(), parts)},
                             what, graph=True)
    if potential is None:
        return None
    graph = _graph_layout(potential.sites, list(values), potential.dim == leaf.numel())
    return potential, leaf if graph else None


def nonfinite_point(model, args, kwargs, values: dict, what: str) -> ValueError:
    """The error for a given point (``values`` of every latent site) where the model's energy is not finite, naming
    the sites that are not."""
    values = {k: torch.as_tensor(v).detach() for k, v in values.items()}
    return ValueError(f"{what}: the model's energy is not finite at the given point: "
                      f"{_nonfinite_sites(model, args, kwargs, init_to_value(values=values))}. Check the values "
                      "against the sites' supports, and the energy for log(0), division by zero or overflow.")


def conditioned_trace(model, args, kwargs, sites: list[Site], unconstrained: dict):
    """The model's trace with its latent ``sites`` conditioned on the constrained values of ``unconstrained`` (argument
    checks off, hidden from outer handlers), and those constrained values."""
    values = {s.name: unconstrained[s.name] if s.on_reals else s.transform(unconstrained[s.name]) for s in sites}
    with pyro.validation_enabled(False), poutine.block():
        return poutine.trace(poutine.condition(model, values)).get_trace(*args, **kwargs), values


def _traced_one_point(model, args, kwargs, sites: list[Site]) -> Callable:
    """The potential of one point by conditioning and tracing the model: the form ``torch.func.vmap`` can map (Pyro's
    own potential function goes through enumeration machinery that reads ``.data``, which vmap forbids)."""

    def one_point(u: torch.Tensor, jacobian: bool) -> torch.Tensor:
        unconstrained = dict(zip([s.name for s in sites], _unpack(sites, u)))
        trace, values = conditioned_trace(model, args, kwargs, sites, unconstrained)
        with pyro.validation_enabled(False):
            total = -trace.log_prob_sum()
        if jacobian:
            for s in sites:
                if not s.on_reals:
                    total = total - s.transform.log_abs_det_jacobian(unconstrained[s.name], values[s.name]).sum()
        return total

    return one_point


def _enumerated_neg_log_joint(model, args, kwargs, sites: list[Site], probe) -> Callable:
    r"""``-log p(x, T(u))`` of many points ``u (B, D)`` in one call (no Jacobian) for a model whose discrete sites are
    enumerated: the model runs once under an outermost plate over the points, its continuous sites conditioned on
    every point's values, the discrete ones enumerated to the left of all plates, and the log joint is contracted over
    the enumerated dimensions only, keeping the points' plate (Pyro's einsum contraction, as its own potential does
    for one point)."""
    from pyro.infer import config_enumerate
    from pyro.ops.contract import contract_to_tensor

    nesting = max((-f.dim for n in probe.nodes.values() if n["type"] == "sample"
                   for f in n["cond_indep_stack"] if f.vectorized), default=0)
    event = {s.name: len(s.shape) - len(probe.nodes[s.name]["fn"].batch_shape) for s in sites}
    points = "_pyebm_points"

    def neg_log_joint(u: torch.Tensor) -> torch.Tensor:
        if u.shape[0] == 1:  # a plate of size 1 is packed away: evaluate the point twice
            return neg_log_joint(u.expand(2, -1))[:1]
        B = u.shape[0]
        values = {}  # each site (B, *batch, *event) -> (B, 1, ..., 1, *batch, *event): the points' plate at -1 - nesting
        for s, v in zip(sites, _unpack(sites, u)):
            batch = len(s.shape) - event[s.name]
            values[s.name] = s.transform(v).reshape((B,) + (1,) * (nesting - batch) + tuple(s.shape))
        enum_model = poutine.enum(config_enumerate(poutine.condition(model, values)), first_available_dim=-2 - nesting)
        with pyro.validation_enabled(False), poutine.block(), pyro.plate(points, B, dim=-1 - nesting):
            trace = poutine.trace(enum_model).get_trace(*args, **kwargs)
        trace.compute_log_prob()
        trace.pack_tensors()
        factors: OrderedDict = OrderedDict()
        for node in trace.nodes.values():
            if node["type"] == "sample" and not isinstance(node["fn"], _Subsample):
                ordinal = frozenset(trace.plate_to_symbol[f.name] for f in node["cond_indep_stack"] if f.vectorized)
                factors.setdefault(ordinal, []).append(node["packed"]["log_prob"])
        enum_dims = set(trace.symbol_to_dim) - set(trace.plate_to_symbol.values())
        target = frozenset({trace.plate_to_symbol[points]})
        return -contract_to_tensor(factors, enum_dims, target_ordinal=target).reshape(-1).expand(B)

    return neg_log_joint


def _unmasked(sites: list[Site], trace) -> np.ndarray:
    """Which coordinates of ``u`` enter the density: a latent's elements masked out (``obs_mask`` leaves the observed
    positions of its ``*_unobserved`` site so; ``poutine.mask``) do not, and would be flat directions."""
    free = []
    for s in sites:
        node = trace.nodes[s.name]
        mask, batch = node["mask"], tuple(node["fn"].batch_shape)
        if mask is None:
            free.append(np.ones(s.numel, dtype=bool))
            continue
        keep = torch.ones(s.unconstrained_shape, dtype=torch.bool)
        if mask is False:
            keep[...] = False
        elif isinstance(mask, torch.Tensor):
            event = len(s.unconstrained_shape) - len(batch)
            keep = mask.expand(batch).reshape(batch + (1,) * event).expand(s.unconstrained_shape)
        free.append(keep.reshape(-1).cpu().numpy())
    return np.concatenate(free)


def _refused(message: str):
    def evaluate(u, jacobian):
        raise ValueError(message)

    return evaluate


def _site(name: str, node: dict, transform) -> Site:
    value, on_reals = node["value"].detach(), _on_reals(transform)
    return Site(name, tuple(value.shape), tuple((value if on_reals else transform.inv(value)).shape), transform,
                on_reals)


def _unpack(sites: list[Site], u: torch.Tensor) -> list[torch.Tensor]:
    out, start = [], 0
    for s in sites:
        out.append(u[..., start : start + s.numel].reshape(tuple(u.shape[:-1]) + tuple(s.unconstrained_shape)))
        start += s.numel
    return out


def _nonfinite_sites(model, args, kwargs, strategy) -> str:
    """Which factors are non-finite at the initial point, for the error message."""
    trace = _prototype(model, args, kwargs, strategy)
    with pyro.validation_enabled(False):
        trace.compute_log_prob()
    bad = []
    for name, node in trace.nodes.items():
        if node["type"] == "sample" and "log_prob" in node and not bool(torch.isfinite(node["log_prob"]).all()):
            kind = "NaN" if bool(torch.isnan(node["log_prob"]).any()) else "infinite"
            bad.append(f"'{name}' is {kind}")
    return "; ".join(bad) if bad else "no single site is non-finite (their sum overflows)"


def _unchecked(d: torch.distributions.Distribution) -> torch.distributions.Distribution:
    """A copy of ``d`` that skips the support check of its values: the potential's transforms put every value in the
    support, and the check (a data-dependent branch per call) costs as much as a small model's arithmetic and stops
    ``torch.compile`` from capturing one graph."""
    try:
        d = copy.deepcopy(d)
    except Exception:  # noqa: BLE001 - a distribution holding something that cannot be copied keeps its check
        return d
    stack = [d]
    while stack:
        part = stack.pop()
        part._validate_args = False
        stack.extend(v for v in vars(part).values() if isinstance(v, torch.distributions.Distribution))
    return d


def energy_potential(direct, kwargs: dict, init) -> Potential:
    """The potential of an energy model from its closed form (:class:`pyebm.energy.DirectEnergy`): one energy call
    for a whole batch of points where the energy accepts a batch, no Pyro trace."""
    sites, values = [], []
    for name, prior in direct.prior.items():
        transform = biject_to(prior.support)
        if isinstance(init, dict) and name in init:
            x = torch.as_tensor(init[name], dtype=_dtype(direct))
            if tuple(x.shape) != tuple(prior.event_shape):
                raise ValueError(f"init['{name}'] has shape {tuple(x.shape)}, but site '{name}' has shape "
                                 f"{tuple(prior.event_shape)}.")
        elif name in direct.flat:
            x = torch.zeros(prior.event_shape, dtype=_dtype(direct))
        else:
            with torch.no_grad():
                x = prior.sample((15,)).median(0).values if init is None else prior.sample()
        u = transform.inv(x)
        sites.append(Site(name, tuple(x.shape), tuple(u.shape), transform, _on_reals(transform)))
        values.append(u.reshape(-1))
    if isinstance(init, dict):
        unknown = sorted(set(init) - set(direct.prior))
        if unknown:
            raise ValueError(f"init names {unknown}, which are not latent sites of the model ({list(direct.prior)}).")
    u0 = torch.cat(values)
    batched = _accepts_batches(direct, sites, u0, kwargs)
    priors = {name: _unchecked(d) for name, d in direct.prior.items() if name not in direct.flat}

    def terms(us: dict, batch: tuple, jacobian: bool) -> torch.Tensor:
        """The potential at unconstrained site values ``us`` with leading ``batch`` dimensions (one point: ())."""
        x = {s.name: us[s.name] if s.on_reals else s.transform(us[s.name]) for s in sites}
        e = direct(x, **kwargs)
        check_energy(e, name="energy", expected_shape=batch, finite=False)
        total = e
        for s in sites:
            if s.name in priors:
                total = total - priors[s.name].log_prob(x[s.name])
            if jacobian and not s.on_reals:
                ladj = s.transform.log_abs_det_jacobian(us[s.name], x[s.name])
                total = total - ladj.reshape(batch + (-1,)).sum(-1)
        return total

    (only,) = sites if len(sites) == 1 else (None,)
    plain = batched and only is not None and only.on_reals and only.name in direct.flat and len(only.shape) == 1

    def evaluate(u: torch.Tensor, jacobian: bool) -> torch.Tensor:
        if plain:  # one vector site on the reals, flat prior: the potential is the energy of u itself
            return direct({only.name: u}, **kwargs)
        if batched:
            return terms(dict(zip(direct.prior, _unpack(sites, u))), tuple(u.shape[:1]), jacobian)
        # an energy of one point: the Potential hands over one row at a time
        return terms(dict(zip(direct.prior, _unpack(sites, u[0]))), (), jacobian).reshape(1)

    return Potential(sites, u0, TORCH, evaluate, batched=batched,
                     potential_fn=lambda params: terms(params, (), True),
                     one_point=lambda u, jacobian: terms(dict(zip(direct.prior, _unpack(sites, u))), (), jacobian))


def _dtype(direct) -> torch.dtype:
    """The dtype of the energy model's priors (a flat prior takes the energy's)."""
    prior = next(iter(direct.prior.values()))
    try:
        return prior.mean.dtype
    except NotImplementedError:
        return prior.sample().dtype


def _accepts_batches(direct, sites: list[Site], u0: torch.Tensor, kwargs: dict) -> bool:
    """Whether the energy maps a batch of points to one energy each: it returns shape (2,) for two points, and the
    same values as for each point alone."""
    u = torch.stack([u0, u0 + 0.1])
    x = {s.name: s.transform(v) for s, v in zip(sites, _unpack(sites, u))}
    try:
        with torch.no_grad():
            both = direct(x, **kwargs)
            if not isinstance(both, torch.Tensor) or tuple(both.shape) != (2,):
                return False
            one = [direct({k: v[i] for k, v in x.items()}, **kwargs) for i in range(2)]
        return all(isinstance(o, torch.Tensor) and o.dim() == 0 for o in one) and bool(
            torch.allclose(both, torch.stack(one), rtol=1e-5, atol=1e-8, equal_nan=True))
    except Exception:  # noqa: BLE001 - an energy written for one point may fail on a batch in any way
        return False


def learnable_energy_parameters(trace) -> dict[str, list[str]]:
    r"""Energy-factor sites whose value depends on learnable Pyro params of the model: ``{site: [param names]}``.

    Sites declared ``normalized=True`` are left out. These are the parameters whose optimisation through the
    ELBO collapses the energy (it ignores their :math:`\log Z(\theta)`).
    """
    params = {name: node["value"] for name, node in trace.nodes.items()
              if node["type"] == "param" and isinstance(node["value"], torch.Tensor) and node["value"].requires_grad}
    found = {}
    if not params:
        return found
    for name, node in trace.nodes.items():
        infer = node.get("infer") or {}
        if node["type"] != "sample" or not infer.get(ENERGY_FACTOR_KEY) or infer.get("normalized"):
            continue
        log_factor = node["fn"].log_factor
        if not log_factor.requires_grad:
            continue
        grads = torch.autograd.grad(log_factor.sum(), list(params.values()), allow_unused=True, retain_graph=True)
        used = [p for p, g in zip(params, grads) if g is not None]
        if used:
            found[name] = used
    return found


# --- the model side of a Posterior ------------------------------------------------------------------------------
class PyroModelView:
    """What a Posterior needs from its Pyro model: deterministic and discrete sites for given latent draws, the
    posterior predictive, pointwise log-likelihoods and the observed data.

    The model runs one draw at a time (exact for any model; a vectorised run over draws is only right for models
    written to broadcast over an extra leading dimension, which cannot be checked), inside the param-store state that
    inference used and outside the caller's handlers.
    """

    def __init__(self, model, args, kwargs, params_state: dict, trace=None):
        self.model, self.args, self.kwargs, self.params_state = model, tuple(args), dict(kwargs), params_state
        if trace is None:  # else a run of the model in this state already made (the potential's)
            with self._scope(), poutine.block(), pyro.validation_enabled(False):
                trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
        self.order, self.deterministic, self.discrete, self.observed, self.param_names = [], [], [], [], []
        self.max_plate_nesting = 0
        for name, node in trace.nodes.items():
            if node["type"] == "param":
                self.param_names.append(name)
            if node["type"] != "sample" or isinstance(node["fn"], _Subsample):
                continue
            for f in node["cond_indep_stack"]:
                if f.vectorized:
                    self.max_plate_nesting = max(self.max_plate_nesting, -f.dim)
            if node["infer"].get("_deterministic"):
                self.deterministic.append(name)
                self.order.append(name)
            elif node["is_observed"]:
                if not node["infer"].get("is_auxiliary") and not node["infer"].get(ENERGY_FACTOR_KEY):
                    self.observed.append(name)
            elif not node["infer"].get("is_auxiliary"):
                if node["fn"].support.is_discrete:
                    self.discrete.append(name)
                self.order.append(name)
        self.observed_values = {k: trace.nodes[k]["value"].detach() for k in self.observed}
        self.site_shapes = {k: tuple(trace.nodes[k]["value"].shape) for k in self.order}

    @property
    def extra_sites(self) -> list[str]:
        """Sites a latent-space approximation does not hold: deterministic and (summed-out) discrete ones."""
        return [k for k in self.order if k in self.deterministic or k in self.discrete]

    def _scope(self):
        return _stack(isolated_param_store(self.params_state), outside_handlers(self.model))

    def params(self) -> dict[str, torch.Tensor]:
        """The model's Pyro params (constrained values) in the state inference used."""
        with isolated_param_store(self.params_state):
            return {k: pyro.param(k).detach().clone() for k in self.param_names}

    def _traces(self, draws: dict, model: Callable | None = None, temperature: float | None = None, args=None,
                kwargs=None):
        """One trace per draw of the model conditioned on ``draws`` (each ``(n, *shape)``)."""
        model = self.model if model is None else model
        args, kwargs = (self.args if args is None else args), (self.kwargs if kwargs is None else kwargs)
        n = next(iter(draws.values())).shape[0]
        with self._scope(), torch.no_grad(), pyro.validation_enabled(False):
            for i in range(n):
                # conditioned inside: infer_discrete runs the model in a block that outer handlers cannot see into
                run = poutine.condition(model, data={k: v[i] for k, v in draws.items()})
                if temperature is not None and self.discrete:
                    run = infer_discrete(run, first_available_dim=-1 - self.max_plate_nesting, temperature=temperature)
                yield poutine.trace(run).get_trace(*args, **kwargs)

    def complete(self, draws: dict, seed: int, temperature: float = 1.0) -> dict:
        """``draws`` (continuous latents, ``(n, *shape)``) with the deterministic and discrete sites added, in the
        model's order. Discrete sites are drawn from their conditional given the continuous ones
        (``infer_discrete`` at ``temperature``: 1 samples, 0 takes the most probable joint configuration)."""
        extra = self.extra_sites
        if not extra:
            return {k: draws[k] for k in self.order if k in draws}
        with seeded(seed):
            values = {k: [] for k in extra}
            for trace in self._traces(draws, temperature=temperature):
                for k in extra:
                    values[k].append(trace.nodes[k]["value"].detach())
        out = dict(draws)
        out.update({k: torch.stack(v) for k, v in values.items()})
        return {k: out[k] for k in self.order if k in out}

    def predictive(self, draws: dict, seed: int, model=None, args=None, kwargs=None) -> dict:
        """Observed and deterministic sites of ``model`` run on each draw (observed sites sampled anew)."""
        model = self.model if model is None else model
        with seeded(seed), self._scope(), poutine.block(), pyro.validation_enabled(False):
            proto = poutine.trace(model).get_trace(*(self.args if args is None else args),
                                                   **(self.kwargs if kwargs is None else kwargs))
        # every sample site the posterior does not hold: observed ones (drawn anew), those left unobserved (obs=None:
        # predictions) and deterministic ones
        names = [k for k, n in proto.nodes.items() if n["type"] == "sample" and not isinstance(n["fn"], _Subsample)
                 and not n["infer"].get("is_auxiliary") and (k not in draws or k in self.deterministic)]
        with seeded(seed):
            values = {k: [] for k in names}
            latent = {k: v for k, v in draws.items() if k not in self.deterministic}
            for trace in self._traces(latent, model=_Resample(set(names) - set(self.deterministic))(model), args=args,
                                      kwargs=kwargs):
                for k in names:
                    values[k].append(trace.nodes[k]["value"].detach())
        return {k: torch.stack(v) for k, v in values.items()}

    def log_likelihood(self, draws: dict) -> dict:
        """Pointwise log-likelihood of every observed site, ``(n, *batch shape)``, for each draw."""
        latent = {k: v for k, v in draws.items() if k not in self.deterministic}
        values = {k: [] for k in self.observed}
        with seeded(0):  # conditioned on every latent, nothing should be drawn; if something is, not from the caller's
            for trace in self._traces(latent):
                for k in self.observed:
                    node = trace.nodes[k]
                    values[k].append(node["fn"].log_prob(node["value"]).detach())
        return {k: torch.stack(v) for k, v in values.items()}

    def observed_data(self) -> dict:
        return dict(self.observed_values)


class _Resample(poutine.messenger.Messenger):
    """Draw the named observed sites anew (``poutine.uncondition`` restricted to them: a deterministic site, also
    observed in Pyro's terms, keeps its value)."""

    def __init__(self, names: set[str]):
        super().__init__()
        self.names = names

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in self.names:
            msg["is_observed"] = False
            msg["infer"] = {**msg["infer"], "was_observed": True, "obs": msg["value"]}
            msg["value"] = None
            msg["done"] = False


@contextlib.contextmanager
def _stack(*managers):
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


# --- drivers: Pyro's HMC/NUTS and SVI over the potential ---------------------------------------------------------
class _CappedHMC(pyro.infer.HMC):
    """Pyro's HMC with at most ``MAX_LEAPFROG`` leapfrog steps per draw (a collapsed step size cannot hang it)."""

    capped_at: float | None = None

    @property
    def num_steps(self) -> int:
        from .mcmc import MAX_LEAPFROG

        raw = max(1, int(self.trajectory_length / self.step_size))
        if raw > MAX_LEAPFROG:
            self.capped_at = self.step_size
            return MAX_LEAPFROG
        return raw


def _kernel(method, potential_fn: Callable):
    common = {"potential_fn": potential_fn, "target_accept_prob": method.target_accept, "full_mass": method.full_mass}
    if method.name == "nuts":
        return pyro.infer.NUTS(max_tree_depth=method.max_tree_depth, **common)
    if method.num_steps is not None:
        return _CappedHMC(step_size=method.step_size, num_steps=method.num_steps, **common)
    return _CappedHMC(step_size=method.step_size, trajectory_length=method.trajectory_length, **common)


def run_mcmc(method, potential: Potential, seed: int, progress: bool):
    """Chains of Pyro's HMC/NUTS, one after another, over the potential: unconstrained draws (chain, draw, D),
    divergences and acceptance rates per chain."""
    from pyro.infer import MCMC

    kernel = _kernel(method, potential.potential_fn)
    draws, divergences, accept = [], [], []
    for chain in range(method.num_chains):
        start = potential.init if method.init is not None else _uniform_start(potential, chain)
        if chain == 0:
            potential.value_and_grad(True)(start[None])  # a density with no gradient path is named here
        mcmc = MCMC(kernel, num_samples=method.num_samples, warmup_steps=method.warmup_steps, num_chains=1,
                    disable_progbar=not progress, initial_params=potential.kernel_params(start))
        mcmc.run()
        draws.append(potential.from_kernel_params(mcmc.get_samples(), (method.num_samples,)).detach())
        diag = mcmc.diagnostics()
        divergences.append(list(diag.get("divergences", {}).get("chain 0", [])))
        accept.append(float(diag.get("acceptance rate", {}).get("chain 0", float("nan"))))
    extra = {}
    if getattr(kernel, "capped_at", None) is not None:
        from .mcmc import MAX_LEAPFROG

        warn(f"HMC: the adapted step size ({kernel.capped_at:.3g}) would need more than {MAX_LEAPFROG} "
                      f"leapfrog steps for trajectory_length {method.trajectory_length}; capped at {MAX_LEAPFROG}, "
                      "which shortens the trajectory. The energy is very steep: rescale it, or use NUTS.")
        extra["leapfrog_capped"] = True
    return torch.stack(draws), divergences, accept, extra


def _uniform_start(potential: Potential, chain: int, tries: int = 100) -> torch.Tensor:
    """Pyro's ``init_to_uniform`` in the unconstrained space: uniform in (-2, 2), redrawn where the energy is not
    finite (at most ``tries`` times)."""
    for _ in range(tries):
        u = torch.rand(potential.dim, dtype=potential.dtype, device=potential.init.device) * 4 - 2
        value = potential(u[None], True)
        if bool(torch.isfinite(value).all()):
            return u
    kind = "NaN" if bool(torch.isnan(value).any()) else "infinite"
    raise NonFiniteEnergyError(
        f"MCMC: the energy is {kind} at {tries} uniform starting points of chain {chain} in (-2, 2) (unconstrained), "
        f"the last {potential.constrain(u)}. Check the energy for log(0), division by zero or overflow there, or "
        "pass `init` where it is finite.")


class PyroGuideApproximation:
    """A user-supplied Pyro guide: draws from running it on its trained parameters (``params``, a param-store state),
    moments from a fixed-seed batch."""

    kind = "guide"
    num_moment_draws = 4000

    def __init__(self, guide: Callable, names: list[str], args: tuple, kwargs: dict, params: dict):
        self.guide, self.names, self.args, self.kwargs, self.params = guide, names, args, kwargs, params

    def sample(self, n: int, seed: int) -> dict:
        out: dict[str, list] = {k: [] for k in self.names}
        with seeded(seed), torch.no_grad(), isolated_param_store(self.params):
            for _ in range(n):
                trace = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
                for k in self.names:
                    out[k].append(trace.nodes[k]["value"].detach())
        return {k: torch.stack(v) for k, v in out.items()}

    @cached_property
    def _draws(self) -> dict:
        return self.sample(self.num_moment_draws, seed=0)

    def mean(self) -> dict:
        return {k: v.mean(0) for k, v in self._draws.items()}

    def std(self) -> dict:
        return {k: v.std(0) for k, v in self._draws.items()}

    def ordered(self, group_by_chain: bool) -> None:
        return None


def run_svi(method, model, args, kwargs, potential: Potential, start, seed: int, progress: bool):
    """Pyro's SVI: the default Gaussian guide (started at ``start = (loc, structure)`` where given), or the user's
    guide; ``TraceEnum_ELBO`` where the model has discrete sites to sum out. Returns the approximation, the losses
    and the guide's name."""
    from pyro.infer import SVI as PyroSVI
    from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate
    from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal
    from tqdm import tqdm

    from .approximations import Gaussian
    from .curvature import DenseCovariance, Diagonal

    view = PyroModelView(model, args, kwargs, pyro.get_param_store().get_state())
    discrete = view.discrete
    layout = getattr(potential, "full", potential)  # the guide covers every latent element, masked ones too
    name = method.auto_guide(potential.dim)
    loc, structure = start
    if name is None:
        guide, label = method.guide, getattr(method.guide, "__name__", type(method.guide).__name__)
    else:
        label = name
        guide_model = poutine.block(model, hide=discrete) if discrete else model
        init_loc = (init_to_value(values={k: v.detach() for k, v in potential.constrain(loc).items()})
                    if loc is not None else _strategy(method.init))
        cls = AutoMultivariateNormal if name == "multivariate_normal" else AutoDiagonalNormal
        guide = cls(guide_model, init_loc_fn=init_loc, init_scale=method.init_scale)
        with torch.no_grad():
            guide(*args, **kwargs)  # sets the guide up (its parameters exist from here on)
        if guide.latent_dim != layout.dim:
            raise RuntimeError(f"internal: the guide has {guide.latent_dim} dimensions, the potential {layout.dim}.")
        if structure is not None:
            _start_guide(guide, loc, structure)
    optim = method.optimizer or pyro.optim.ClippedAdam({"lr": method.lr, "lrd": method.lr_decay ** (1.0 / method.steps)})
    particles = {"num_particles": method.num_particles, "vectorize_particles": method.vectorize_particles}
    if discrete:
        elbo = TraceEnum_ELBO(max_plate_nesting=view.max_plate_nesting, **particles)
        svi = PyroSVI(config_enumerate(model), guide, optim, elbo)
    else:
        svi = PyroSVI(model, guide, optim, Trace_ELBO(**particles))
    losses = []
    with tqdm(range(method.steps), desc="SVI", disable=not progress, leave=False) as bar:
        for step in bar:
            with pyro.validation_enabled(False):
                loss = svi.step(*args, **kwargs)
            losses.append(loss)
            if not np.isfinite(loss):
                break
            if step % 50 == 0:
                bar.set_postfix(elbo=f"{-loss:.6g}")
    if name is None:
        state = pyro.get_param_store().get_state()
        return PyroGuideApproximation(guide, potential.names(), args, kwargs, state), losses, label
    with torch.no_grad():
        q = guide.get_posterior()
        if name == "multivariate_normal":
            shape = DenseCovariance(q.scale_tril.detach().clone(), TORCH)
        else:
            shape = Diagonal(q.base_dist.scale.detach().clone() ** 2, TORCH)
        approximation = Gaussian(layout, q.mean.detach().clone(), shape)
    return approximation, losses, label


def _start_guide(guide, loc: torch.Tensor, structure) -> None:
    """Put the Gaussian guide at the Laplace solution: mean ``loc``, covariance ``structure``."""
    from pyro.nn import PyroParam

    with torch.no_grad():
        guide.loc = torch.nn.Parameter(loc.detach().clone())
        if hasattr(guide, "scale_tril"):
            L = torch.linalg.cholesky(structure.covariance())
            d = L.diagonal()
            guide.scale = PyroParam(d.clone(), guide.scale_constraint)
            guide.scale_tril = PyroParam(L / d[:, None], guide.scale_tril_constraint)
        else:
            guide.scale = PyroParam(structure.variance().sqrt().clone(), guide.scale_constraint)


class PyroBackend:
    """Everything pyebm's methods need from Pyro, in one place."""

    name = "pyro"
    ops = TORCH

    @contextlib.contextmanager
    def session(self, model: Callable, seed: int):
        """Seeds, the caller's param store (a copy: the caller's is restored afterwards) and the caller's handlers
        applied to the model (see :func:`pyebm.handlers.outside_handlers`)."""
        with seeded(seed), isolated_param_store(pyro.get_param_store().get_state()), outside_handlers(model) as m:
            yield m

    def seed_scope(self, seed: int):
        return seeded(seed)

    # --- potentials ------------------------------------------------------------------------------------------------
    def potential(self, model: Callable, args: tuple, kwargs: dict, *, init=None, jit_compile: bool = False,
                  what: str = "inference", seed: int = 0) -> Potential:
        """The potential of ``model(*args, **kwargs)``; ``init`` (a dict of site values or a Pyro init strategy,
        default ``init_to_median``) gives its initial point (drawn from the session's seeded RNG: ``seed`` is for
        backends without a global one)."""
        closed_form = not (jit_compile or args or (callable(init) and not isinstance(init, dict)))
        direct = getattr(model, "direct", None) if closed_form else None
        if direct is not None:
            return energy_potential(direct, kwargs, init)
        return traced_potential(model, args, kwargs, init, jit_compile, what)

    def model_view(self, model, args, kwargs, potential: Potential | None) -> PyroModelView:
        return PyroModelView(model, args, kwargs, pyro.get_param_store().get_state(),
                             trace=getattr(potential, "trace", None))

    def mcmc(self, method, potential: Potential, seed: int, progress: bool):
        return run_mcmc(method, potential, seed, progress)

    def svi(self, method, model, args, kwargs, potential: Potential, start, seed: int, progress: bool):
        return run_svi(method, model, args, kwargs, potential, start, seed, progress)

    def learnable_energy_parameters(self, model, args, kwargs) -> dict[str, list[str]]:
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        return learnable_energy_parameters(trace)


#: the Pyro backend
PYRO = PyroBackend()
