"""DUKD (``DUKDModel``) for the EDSR, RCAN and SwinIR pairs at x2, x3, x4 (docs/dukd.md, "Shipped YAMLs").

Per-config loss weights and switches copy the public yun224/DUKD configs; our defaults for the
divergence options are written out explicitly. Each config comes twice: the LMDB sub-image
recipe (``train_DUKD_<Arch>_<tag>.yml``) and full DIV2K images read from disk as the public configs do
(``train_DUKD_<Arch>_<tag>_disk.yml``); file names follow every method's ``train_<run name>.yml`` /
``test_<run name>.yml``.
"""
from option_templates import DIV2K_LMDB, PAIRS, SCALES, insert_after, pair_tag, test_options, train_options

#: (family, scale) -> (w_pix, w_kd, n_gt_sub, zoom_out, noisy prob or None = no ``noisy`` block)
PUBLIC_CONFIGS = {
    ('EDSR', 2): (5.0, 1.0, 2, True, 0.3),
    ('EDSR', 3): (5.0, 1.0, 1, True, 0.3),
    ('EDSR', 4): (5.0, 1.0, 1, True, 0.3),
    ('RCAN', 2): (1.0, 1.0, 1, False, None),
    ('RCAN', 3): (2.0, 1.0, 1, True, 0.3),
    ('RCAN', 4): (1.0, 1.0, 1, False, 0.0),
    ('SwinIR', 2): (5.0, 1.0, 1, False, 0.3),
    ('SwinIR', 3): (5.0, 1.0, 1, False, 0.3),
    ('SwinIR', 4): (5.0, 1.0, 1, False, 0.3),
}


def l1(weight: float) -> dict:
    return {'type': 'L1Loss', 'loss_weight': weight, 'reduction': 'mean'}


def method_train(family: str, scale: int) -> dict:
    w_pix, w_kd, n_gt_sub, zoom_out, prob = PUBLIC_CONFIGS[(family, scale)]
    train = {
        'pixel_opt': l1(w_pix),
        'kd_opt': l1(w_kd),
        'dukd_opt': {'n_gt_sub': [n_gt_sub], 'zoom_out': zoom_out, 'update_mode': 'single_step',
                     'lc_inverse': 'exact', 'lc_on': ['zoom_in'], 'zoom_in_crop': 'grid', 'zoom_out_resize': 'matlab'},
    }
    if prob is not None:
        train['noisy'] = {'prob': prob}
    train['teacher_train_mode'] = False
    return train


def run_name(family: str, scale: int, disk: bool = False) -> str:
    return f'DUKD_{family}_{pair_tag(family, scale)}' + ('_disk' if disk else '')


def disk_train_set(scale: int, train_set: dict) -> dict:
    """The public configs' data: full DIV2K 0001-0800 images from disk, same patch/batch."""
    train_set = dict(train_set)
    train_set.update(dataroot_gt=f'{DIV2K_LMDB}/DIV2K_train_HR',
                     dataroot_lq=f'{DIV2K_LMDB}/DIV2K_train_LR_bicubic/X{scale}',
                     filename_tmpl=f'{{}}x{scale}', io_backend={'type': 'disk'})
    return train_set


def train_config(family: str, scale: int, disk: bool) -> dict:
    name = run_name(family, scale, disk)
    opt = train_options(name, 'DUKDModel', family, scale, method_train=method_train(family, scale))
    # The student wrapper runs 2-3 times per backward; DDP needs no unused-parameter search
    # (docs/core.md, "Distributed training").
    opt = insert_after(opt, 'num_gpu', 'find_unused_parameters', False)
    if disk:
        opt['datasets']['train'] = disk_train_set(scale, opt['datasets']['train'])
    if family == 'EDSR' and scale == 4:  # public EDSR x4: initialise from the DUKD x2 student
        opt['path']['pretrain_network_g'] = f'experiments/{run_name("EDSR", 2, disk)}/models/net_g_latest.pth'
        opt['path']['strict_load_g'] = False
    return opt


def generate() -> dict:
    out = {}
    for family in PAIRS:
        for scale in SCALES:
            name = run_name(family, scale)
            out[f'options/train/DUKD/train_{name}.yml'] = train_config(family, scale, disk=False)
            out[f'options/train/DUKD/train_{run_name(family, scale, disk=True)}.yml'] = train_config(family, scale,
                                                                                                  disk=True)
            out[f'options/test/DUKD/test_{name}.yml'] = test_options(f'test_{name}', name, family, scale,
                                                                    model_type='DUKDModel')
    return out
