"""FitNet, AT, FAKD and RKD feature distillation (baselines): ``FeatureKDModel`` and its losses.

See docs/feature_kd.md.
"""
