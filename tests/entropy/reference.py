"""Independent numpy references for the entropy measures, written from the formulas (float64)."""

import numpy as np


def softmax(z, temperature=1.0):
    z = np.asarray(z, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def shannon(p):
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)


def tsallis(p, q):
    return (1.0 - np.sum(np.asarray(p, np.float64) ** q, axis=-1)) / (q - 1.0)


def renyi(p, a):
    p = np.asarray(p, np.float64)
    if np.isinf(a):
        return -np.log(p.max(axis=-1))
    return np.log(np.sum(np.where(p > 0, p**a, 0.0), axis=-1)) / (1.0 - a)


def varentropy(p):
    p = np.asarray(p, np.float64)
    h = shannon(p)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(p > 0, p * (np.log(p) + h) ** 2, 0.0), axis=-1)
