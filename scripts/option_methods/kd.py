"""Output ("logits") KD and the from-scratch students, for the EDSR, RCAN and SwinIR pairs."""
from option_templates import PAIRS, SCALES, pair_tag, test_options, train_options


def generate() -> dict:
    out = {}
    for family in PAIRS:
        for scale in SCALES:
            tag = pair_tag(family, scale)
            name = f'KD_{family}_{tag}'
            out[f'options/train/KD/train_{name}.yml'] = train_options(name, 'KDModel', family, scale)
            out[f'options/test/KD/test_{name}.yml'] = test_options(f'test_{name}', name, family, scale)
            scratch = f'Scratch_{family}_x{scale}{tag.split("_")[-1]}'
            out[f'options/train/Scratch/train_{scratch}.yml'] = train_options(
                scratch, 'SRModel', family, scale, teacher=False)
            out[f'options/test/Scratch/test_{scratch}.yml'] = test_options(
                f'test_{scratch}', scratch, family, scale, model_type='SRModel')
    return out
