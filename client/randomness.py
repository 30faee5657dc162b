"""Where a site's differential-privacy randomness comes from: a secret only the site holds.

DP protects the patients from the coordinator, so the coordinator must not be able to predict
the noise: a noise draw it can replay is a noise draw it can subtract. Every random choice DP
relies on here (DP-SGD's Poisson sampling and Gaussian noise, the noise on released counts and
histograms) comes from generators seeded with fresh bits from the operating system's CSPRNG
(`secrets`) at each release, never from the run config, the round, the site's name or anything
else the coordinator knows or sets. The seeds live only in memory and are never written or sent.

Opacus' own `secure_mode` needs torchcsprng, which has no build for current torch; seeding
torch's generators (Mersenne Twister on CPU, Philox on CUDA) with 64 secret bits per release and
drawing Opacus' noise in its secure mode (four draws summed, against floating-point attacks)
gives the same property: nothing outside the site can reproduce the draws.

`GENOFED_SIMULATION_SEED` (an environment variable of the site's own process, which the
coordinator cannot set) makes the draws reproducible for tests and simulations in which every
"site" runs on one machine. It is for those only, never for a real site, and is logged loudly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass

import numpy as np
import torch

SIMULATION_SEED_ENV = "GENOFED_SIMULATION_SEED"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPRandomness:
    """The seed of one release's DP randomness; `secret()` for every real release."""

    seed: int  # 64 bits
    simulated: bool = False

    @classmethod
    def secret(cls) -> DPRandomness:
        return cls(secrets.randbits(64))

    @classmethod
    def for_release(cls, label: str) -> DPRandomness:
        """The randomness of one release at a site: secret, unless the site's own environment
        asks for a reproducible simulation (`GENOFED_SIMULATION_SEED`)."""
        seed = os.environ.get(SIMULATION_SEED_ENV)
        if seed is None:
            return cls.secret()
        log.warning("%s is set: DP noise is REPRODUCIBLE (simulations and tests only, never at "
                    "a real site)", SIMULATION_SEED_ENV)
        digest = hashlib.sha256(f"{seed}/{label}".encode()).digest()
        return cls(int.from_bytes(digest[:8], "little"), simulated=True)

    def _derived(self, purpose: str) -> int:
        digest = hashlib.sha256(f"{self.seed}/{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "little")

    def torch_generator(self, device: torch.device | str, purpose: str) -> torch.Generator:
        """A torch generator on `device` for one purpose (Poisson sampling, noise)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(self._derived(purpose))
        return gen

    def numpy(self, purpose: str) -> np.random.Generator:
        """A numpy generator for one purpose (noise on released counts and histograms)."""
        return np.random.Generator(np.random.PCG64(self._derived(purpose)))
