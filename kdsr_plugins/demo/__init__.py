"""End-to-end demo: teachers -> distilled and scratch students -> PSNR/SSIM table (CPU, minutes)."""
