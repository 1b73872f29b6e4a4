"""The demo reads test metrics with the report's BasicSR log parser (one parser for both)."""
import os

import pytest

from kdsr_plugins.demo.pipeline import DemoStepError, read_test_metrics

LOG = ('2025-01-01 00:00:00,000 INFO: Loading EDSR model from net_g_latest.pth, with param key: [params].\n'
       '2025-01-01 00:00:01,000 INFO: Testing demo_val...\n'
       '2025-01-01 00:00:02,000 INFO: Validation demo_val\n'
       '\t # psnr: 27.1234\tBest: 28.0000 @ 100 iter\n'
       '\t # ssim: 0.8123\tBest: 0.8200 @ 100 iter\n\n'
       '2025-01-01 00:00:03,000 INFO: Validation Set5\n'
       '\t # psnr: 31.5000\n\n')


def test_read_test_metrics_takes_the_first_dataset_current_values(tmp_path):
    folder = tmp_path / 'test_x'
    folder.mkdir()
    (folder / 'test_test_x_20250101_000000.log').write_text(LOG)
    assert read_test_metrics(str(tmp_path), 'test_x') == {'psnr': 27.1234, 'ssim': 0.8123}
    empty = folder / 'test_test_x_20250101_000001.log'
    empty.write_text('2025-01-01 00:00:00,000 INFO: nothing\n')
    os.utime(empty, (2e9, 2e9))  # the newest log is read
    with pytest.raises(DemoStepError, match='No metric'):
        read_test_metrics(str(tmp_path), 'test_x')
    with pytest.raises(DemoStepError, match='No test log'):
        read_test_metrics(str(tmp_path), 'test_y')
