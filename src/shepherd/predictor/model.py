"""The two-stage predictor as one small shared-trunk network in numpy.

    x --standardise--> h = relu(x W1 + b1)        (the shared trunk; hidden=0 makes it linear: h = x)
                        |-- logit  = h wc + bc     stage 1: "is a hint needed?"     (all items)
                        |-- size   = h ws + bs     stage 2: how big a hint          (positives only)
                        `-- loglen = h wl + bl     auxiliary: log(1 + L), the LLM's answer length

Joint loss (the paper's):  lambda * L_cls + (1 - lambda) * L_size  (+ length_weight * L_len)
  L_cls : class-weighted binary cross-entropy (positives and negatives weigh the same in total, or a
          given `pos_weight`), since one class is rare;
  L_size: Huber loss on the size target, over positive items only;
  L_len : Huber loss on log(1 + L) over all items (it converts a predicted fraction into tokens).
The size target is either the hint fraction n*/L ("fraction") or log(1 + n*) ("log_tokens").
Trained full-batch with Adam and L2 weight decay, deterministically from `seed`. Inference is two small
matrix products: microseconds. Saved as plain arrays (see `to_arrays` / `from_arrays`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

SizeTarget = Literal["fraction", "log_tokens"]


@dataclass
class NetConfig:
    """The two-stage network's recipe and training settings (`shepherd.config.ModelConfig` is a served model)."""

    hidden: int = 16
    lam: float = 0.5
    l2: float = 0.1
    lr: float = 0.01
    epochs: int = 300
    huber_delta: float = 1.0
    #: None: balanced (sum of positive weights = sum of negative weights); else weight of one positive
    pos_weight: float | None = None
    length_weight: float = 0.1
    size_target: SizeTarget = "fraction"
    dropout: float = 0.0
    #: z-score input columns with the training mean / std: True all, False none (the featurizer's own
    #: scale, so the L2 penalty shrinks small-scale blocks such as hashed n-grams harder), None: the
    #: columns the featurizer asks for (`Featurizer.standardize_mask`; all when no mask is given)
    standardize: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError("lam must be in [0, 1]")
        if self.hidden < 0 or self.epochs < 1 or self.lr <= 0 or self.l2 < 0 or self.huber_delta <= 0:
            raise ValueError("hidden >= 0, epochs >= 1, lr > 0, l2 >= 0 and huber_delta > 0 are required")
        if self.size_target not in ("fraction", "log_tokens"):
            raise ValueError("size_target must be 'fraction' or 'log_tokens'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


def _huber_grad(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(r)
    loss = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    grad = np.clip(r, -delta, delta)
    return loss, grad


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


class TwoStageModel:
    """Shared trunk + classifier / size / length heads, trained with the joint loss."""

    PARAMS = ("W1", "b1", "wc", "bc", "ws", "bs", "wl", "bl")

    def __init__(self, config: NetConfig | None = None, **kwargs: Any) -> None:
        self.config = config or NetConfig(**kwargs)
        self.params: dict[str, np.ndarray] = {}
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.history: list[float] = []
        self._mask: np.ndarray | None = None

    # -- forward ------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return bool(self.params)

    @property
    def n_inputs(self) -> int:
        return 0 if self.mu is None else int(self.mu.shape[0])

    def _trunk(self, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.config.hidden == 0:
            return Xs, None
        pre = Xs @ self.params["W1"] + self.params["b1"]
        return np.maximum(pre, 0.0), pre

    def predict_raw(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """prob (hint needed), size (in the size target's units), loglen (log(1+L)) per row."""
        if not self.fitted:
            raise RuntimeError("the model is not trained")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != self.n_inputs:
            raise ValueError(f"expected {self.n_inputs} features, got {X.shape[1]}")
        h, _ = self._trunk((X - self.mu) / self.sd)
        p = self.params
        logit = h @ p["wc"] + p["bc"]
        return {"prob": _sigmoid(logit), "logit": logit, "size": h @ p["ws"] + p["bs"],
                "loglen": h @ p["wl"] + p["bl"]}

    # -- training -----------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, size: np.ndarray, loglen: np.ndarray | None = None,
            sample_weight: np.ndarray | None = None, standardize_mask: np.ndarray | None = None) -> TwoStageModel:
        """X: (n, d) features; y: 0/1 hint needed; size: size target (used where y == 1); loglen: log(1+L);
        standardize_mask: which columns to z-score when `config.standardize` is None."""
        self._mask = standardize_mask
        # the matrices are small: one BLAS thread is several times faster than two fighting over a busy CPU
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - scikit-learn (the predictor extra) brings it
            return self._fit(X, y, size, loglen, sample_weight)
        with threadpool_limits(1):
            return self._fit(X, y, size, loglen, sample_weight)

    def _fit(self, X, y, size, loglen, sample_weight) -> TwoStageModel:
        cfg = self.config
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        size = np.nan_to_num(np.asarray(size, dtype=np.float64).reshape(-1))
        n, d = X.shape
        if n == 0:
            raise ValueError("no training rows")
        if y.shape[0] != n or size.shape[0] != n:
            raise ValueError("X, y and size must have the same number of rows")
        has_len = loglen is not None
        loglen = np.zeros(n) if loglen is None else np.asarray(loglen, dtype=np.float64).reshape(-1)
        rng = np.random.default_rng(cfg.seed)

        if cfg.standardize is None:
            mask = np.ones(d, dtype=bool) if self._mask is None else np.asarray(self._mask, dtype=bool)
            if mask.shape != (d,):
                raise ValueError(f"standardize_mask has shape {mask.shape}, expected ({d},)")
        else:
            mask = np.full(d, bool(cfg.standardize))
        sd = X.std(axis=0)
        self.mu = np.where(mask, X.mean(axis=0), 0.0)
        self.sd = np.where(mask & (sd > 1e-8), sd, 1.0)
        Xs = (X - self.mu) / self.sd

        # class weights: each class carries half the classification loss (unless pos_weight is given)
        n_pos = float(y.sum())
        n_neg = float(n - n_pos)
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if cfg.pos_weight is not None:
            cw = np.where(y > 0.5, cfg.pos_weight, 1.0)
        elif n_pos > 0 and n_neg > 0:
            cw = np.where(y > 0.5, n / (2.0 * n_pos), n / (2.0 * n_neg))
        else:
            cw = np.ones(n)
        wc = w * cw
        wc = wc / wc.sum()
        pos = y > 0.5
        ws = np.where(pos, w, 0.0)
        ws = ws / ws.sum() if ws.sum() > 0 else ws
        wl = w / w.sum()

        H = cfg.hidden if cfg.hidden > 0 else d
        p: dict[str, np.ndarray] = {}
        if cfg.hidden > 0:
            p["W1"] = rng.normal(0.0, np.sqrt(2.0 / max(d, 1)), size=(d, H))
            p["b1"] = np.zeros(H)
        else:
            p["W1"] = np.zeros((0, 0))
            p["b1"] = np.zeros(0)
        p["wc"] = rng.normal(0.0, 0.01, size=H)
        prior = np.clip(n_pos / n, 1e-3, 1 - 1e-3)
        p["bc"] = np.array(0.0 if cfg.pos_weight is None else np.log(prior / (1 - prior)))
        p["ws"] = rng.normal(0.0, 0.01, size=H)
        p["bs"] = np.array(float(size[pos].mean()) if pos.any() else 0.0)
        p["wl"] = rng.normal(0.0, 0.01, size=H)
        p["bl"] = np.array(float((wl * loglen).sum()))
        self.params = p

        trainable = [k for k in self.PARAMS if not (cfg.hidden == 0 and k in ("W1", "b1"))]
        m = {k: np.zeros_like(p[k]) for k in trainable}
        v = {k: np.zeros_like(p[k]) for k in trainable}
        b1_, b2_, eps = 0.9, 0.999, 1e-8
        lam = cfg.lam
        self.history = []
        for t in range(1, cfg.epochs + 1):
            if cfg.hidden > 0:
                pre = Xs @ p["W1"] + p["b1"]
                h = np.maximum(pre, 0.0)
                if cfg.dropout > 0:
                    mask = (rng.random(h.shape) >= cfg.dropout) / (1.0 - cfg.dropout)
                    h = h * mask
            else:
                h, pre, mask = Xs, None, None
            logit = h @ p["wc"] + p["bc"]
            prob = _sigmoid(logit)
            s_pred = h @ p["ws"] + p["bs"]
            l_pred = h @ p["wl"] + p["bl"]

            bce = -(y * np.log(np.clip(prob, 1e-12, 1)) + (1 - y) * np.log(np.clip(1 - prob, 1e-12, 1)))
            loss_c = float((wc * bce).sum())
            hs, gs = _huber_grad(s_pred - size, cfg.huber_delta)
            loss_s = float((ws * hs).sum())
            hl, gl = _huber_grad(l_pred - loglen, cfg.huber_delta)
            loss_l = float((wl * hl).sum()) if has_len else 0.0
            a_c, a_s, a_l = lam, 1.0 - lam, (cfg.length_weight if has_len else 0.0)
            self.history.append(a_c * loss_c + a_s * loss_s + a_l * loss_l)

            d_logit = a_c * wc * (prob - y)
            d_s = a_s * ws * gs
            d_l = a_l * wl * gl
            g = {
                "wc": h.T @ d_logit, "bc": np.array(d_logit.sum()),
                "ws": h.T @ d_s, "bs": np.array(d_s.sum()),
                "wl": h.T @ d_l, "bl": np.array(d_l.sum()),
            }
            if cfg.hidden > 0:
                dh = np.outer(d_logit, p["wc"]) + np.outer(d_s, p["ws"]) + np.outer(d_l, p["wl"])
                if cfg.dropout > 0:
                    dh = dh * mask
                dpre = dh * (pre > 0)
                g["W1"] = Xs.T @ dpre
                g["b1"] = dpre.sum(axis=0)
            for k in ("W1", "wc", "ws", "wl"):
                if k in g:
                    g[k] = g[k] + cfg.l2 * p[k]
            for k in trainable:
                m[k] = b1_ * m[k] + (1 - b1_) * g[k]
                v[k] = b2_ * v[k] + (1 - b2_) * g[k] * g[k]
                mh = m[k] / (1 - b1_ ** t)
                vh = v[k] / (1 - b2_ ** t)
                p[k] = p[k] - cfg.lr * mh / (np.sqrt(vh) + eps)
        return self

    # -- persistence --------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        if not self.fitted:
            raise RuntimeError("the model is not trained")
        out = {k: np.asarray(v, dtype=np.float64) for k, v in self.params.items()}
        out["mu"] = self.mu
        out["sd"] = self.sd
        return out

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TwoStageModel:
        model = cls(NetConfig(**config))
        missing = [k for k in (*cls.PARAMS, "mu", "sd") if k not in arrays]
        if missing:
            raise ValueError(f"model arrays missing: {', '.join(missing)}")
        model.params = {k: np.asarray(arrays[k], dtype=np.float64) for k in cls.PARAMS}
        model.mu = np.asarray(arrays["mu"], dtype=np.float64)
        model.sd = np.asarray(arrays["sd"], dtype=np.float64)
        return model

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
