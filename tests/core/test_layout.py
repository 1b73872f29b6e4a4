"""The layout rules of the package: no import cycles, no method imports another method, core never imports a method."""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'scripts'))
import layout_report  # noqa: E402


def test_layout_rules_hold():
    rep = layout_report.report()
    assert rep['cycles'] == []
    assert rep['method_to_method_imports'] == []
    assert rep['core_to_method_imports'] == []
    areas = {'core', 'compat', 'methods/dukd', 'methods/feature_kd', 'methods/mipkd', 'methods/mtkd'}
    assert areas <= set(rep['files_lines'])


def test_layout_report_sees_a_method_to_method_import(tmp_path, monkeypatch):
    """The checker is not vacuous: an import from one method folder into another is reported."""
    pkg = tmp_path / 'kdsr_plugins'
    for sub in ('methods/a', 'methods/b', 'core'):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'methods' / '__init__.py').write_text('')
    (pkg / 'methods/a/x_model.py').write_text('from kdsr_plugins.methods.b.y import f\n')
    (pkg / 'methods/b/y.py').write_text('from kdsr_plugins.methods.a import x_model\ndef f():\n    pass\n')
    (pkg / 'core/z.py').write_text('import kdsr_plugins.methods.b.y\n')
    monkeypatch.setattr(layout_report, 'ROOT', str(tmp_path))
    rep = layout_report.report()
    assert ('kdsr_plugins.methods.a.x_model', 'kdsr_plugins.methods.b.y') in rep['method_to_method_imports']
    assert ('kdsr_plugins.core.z', 'kdsr_plugins.methods.b.y') in rep['core_to_method_imports']
    assert rep['cycles'] == [['kdsr_plugins.methods.a.x_model', 'kdsr_plugins.methods.b.y']]
