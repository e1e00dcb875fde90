"""The energy story in one line: why a cut in activation traffic becomes a smaller DRAM and energy saving (the
weights' bytes do not shrink, the MACs' energy does not move) and how the weights' share changes with the batch."""

from __future__ import annotations

from .cost import PJ_PER_UJ, AcceleratorEstimate, Cost

OTHER_BATCH = 64  # the batch the story compares with (batch 1 when the estimate's is this large already)


def _energy_at(cost: Cost, weights: float, result: AcceleratorEstimate, batch: int) -> tuple[float, float]:
    """(energy uJ, weights' share of the DRAM bytes) per image of ``cost`` (weights per image: ``weights`` at
    ``result.batch``) at another ``batch``."""
    moved_weights = weights * result.batch / batch
    dram = cost.dram_bytes - weights + moved_weights
    return dram * 8 * result.accelerator.pj_per_dram_bit / PJ_PER_UJ + cost.mac_energy_uj, moved_weights / dram


def energy_story(result: AcceleratorEstimate) -> str:
    """Zebra+ZVC against the baseline in ZVC (against the same model's dense without a baseline): the activation
    traffic cut, the weights' share, the DRAM byte and energy savings, then the energy saving at another batch."""
    reference, name = ((result.baseline, "the baseline in ZVC") if result.baseline is not None
                       else (result, "dense"))
    ref = reference.total("zvc" if result.baseline is not None else "dense")
    ref_weights, weights = reference.weight_bytes(), result.weight_bytes()
    zebra = result.total("zebra_zvc")
    traffic = 1 - (zebra.dram_bytes - weights) / (ref.dram_bytes - ref_weights)
    other = OTHER_BATCH if result.batch < OTHER_BATCH else 1
    ref_energy, share = _energy_at(ref, ref_weights, result, other)
    zebra_energy, _ = _energy_at(zebra, weights, result, other)
    return (f"{result.accelerator.name}: Zebra+ZVC moves {traffic:.0%} fewer activation bytes than {name}, but the "
            f"weights are {ref_weights / ref.dram_bytes:.0%} of its DRAM bytes at batch {result.batch}, so DRAM bytes "
            f"fall {1 - zebra.dram_bytes / ref.dram_bytes:.0%}, and the MACs {ref.mac_energy_uj / ref.energy_uj:.0%} "
            f"of its energy, so energy falls {1 - zebra.energy_uj / ref.energy_uj:.0%}; at batch {other} the weights "
            f"are {share:.0%} of its bytes and energy falls {1 - zebra_energy / ref_energy:.0%}")
