"""Report grid with the names data_prep benchmark and BasicSR write (docs/guarantees.md, "Report").

Found case: ``--hr HR --lr LR`` with ``<stem>x4.png`` LR names (BasicSR then names outputs
``<stem>x4_<suffix>.png``) dropped the HR tile and every dB label and chose the crop on a student
output; ``--grid-image <stem>`` dropped every model tile. The grid must match ``<stem>x<scale>``
names and plain stems both ways, warn about every tile it cannot fill, and crop on HR.
"""
import os

import cv2
import numpy as np
import pytest
from test_report import DATASET, write_test_log

from kdsr_plugins.report import ReportOptions, build_report, figures

SIZE = 96


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """HR ``baby.png`` (textured top-left) + distractor ``babyface.png``; LR ``babyx4.png``; one student
    output ``babyx4_test_kd_s0.png`` with strong texture bottom-right only (where HR is flat)."""
    rng = np.random.default_rng(0)
    hr = np.full((SIZE, SIZE, 3), 128, np.uint8)
    hr[:32, :32] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    (tmp_path / 'HR').mkdir(), (tmp_path / 'LR').mkdir()
    cv2.imwrite(str(tmp_path / 'HR' / 'baby.png'), hr)
    cv2.imwrite(str(tmp_path / 'HR' / 'babyface.png'), np.zeros_like(hr))
    cv2.imwrite(str(tmp_path / 'LR' / 'babyx4.png'), hr[::4, ::4])
    out = hr.copy()
    out[-32:, -32:] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    res = tmp_path / 'results'
    write_test_log(str(res), 'test_kd_s0', {DATASET: {'psnr': 30.0, 'ssim': 0.9}})
    vis = res / 'test_kd_s0' / 'visualization' / DATASET
    os.makedirs(vis)
    cv2.imwrite(str(vis / 'babyx4_test_kd_s0.png'), out)
    drawn = {}

    def capture(tiles, crop, scale, path, title=None, cols=None):
        drawn.update(tiles=tiles, crop=crop, scale=scale, title=title)
    monkeypatch.setattr(figures, 'draw_grid', capture)
    return tmp_path, hr, drawn


def report(root, **kw):
    return build_report(ReportOptions(results=str(root / 'results'), out=str(root / 'report'), crop_size=32, **kw))


@pytest.mark.parametrize('grid_image', [None, 'baby', 'babyx4'])
def test_scale_suffixed_names_fill_every_tile(bench, grid_image):
    root, hr, drawn = bench
    assert 'grid' in report(root, hr=str(root / 'HR'), lr=str(root / 'LR'), grid_image=grid_image)
    labels = [t.label for t in drawn['tiles']]
    assert labels[0].startswith('HR ') and labels[1].startswith('LR ') and labels[-1] == 'HR', labels
    model = [t for t in drawn['tiles'] if t.label.startswith('kd')]
    assert len(model) == 1 and model[0].label.endswith(' dB')  # the dB label needs the HR image
    assert not (drawn['tiles'][0].image == 0).all()  # baby.png, not babyface.png
    assert drawn['scale'] == 4
    y, x, size = drawn['crop']
    assert (y, x) == figures.textured_crop(hr, size, align=4) and y < 32 and x < 32  # chosen on HR


def test_every_tile_that_cannot_be_filled_is_reported(bench, capsys):
    root = bench[0]
    (root / 'empty').mkdir()
    report(root, hr=str(root / 'empty'), lr=str(root / 'empty'), grid_image='baby')
    out = capsys.readouterr().out
    assert "--hr " in out and "no image 'baby'" in out and 'and the dB labels too' in out
    assert "--lr " in out and 'no HR or LR image: the crop is chosen on the output of' in out
    report(root, hr=str(root / 'HR'), grid_image='rocket')
    out = capsys.readouterr().out
    assert "no SR image 'rocket' for kd" in out


def test_find_image_matches_scale_suffix_both_ways(bench):
    root, _, _ = bench
    assert figures.find_image(str(root / 'HR'), 'babyx4').endswith('baby.png')
    assert figures.find_image(str(root / 'LR'), 'baby').endswith('babyx4.png')
    assert figures.find_image(str(root / 'HR'), 'baby').endswith('baby.png')
    assert figures.find_image(str(root / 'HR'), 'bab') is None  # no prefix matching
    assert figures.sr_image_path(str(root / 'results' / 'test_kd_s0'), 'test_kd_s0', 'baby').endswith(
        'babyx4_test_kd_s0.png')
