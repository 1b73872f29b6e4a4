"""The layout rules of the package: no import cycles, no method imports another method, core never imports a method,
data_prep, a tool, the report, the demo or an entry point, and compat imports nothing else of the package."""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'scripts'))
import layout_report  # noqa: E402


def test_layout_rules_hold():
    rep = layout_report.report()
    assert rep['cycles'] == []
    assert rep['method_to_method_imports'] == []
    assert rep['core_to_method_imports'] == []
    assert rep['upward_imports'] == []
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


def test_layout_report_sees_core_importing_an_upper_layer(tmp_path, monkeypatch):
    """Upward imports are reported: core -> data_prep / tools / report / demo / entry point, compat -> core."""
    pkg = tmp_path / 'kdsr_plugins'
    for sub in ('core', 'compat', 'data_prep', 'tools', 'report', 'demo'):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'train.py').write_text('')
    for sub in ('data_prep', 'tools', 'report', 'demo'):
        (pkg / sub / 'm.py').write_text('')
    (pkg / 'core/a.py').write_text('from kdsr_plugins.data_prep.m import x\nimport kdsr_plugins.compat.c\n')
    (pkg / 'core/b.py').write_text('def f():\n    from kdsr_plugins.tools import m  # inside a function too\n'
                                    'from kdsr_plugins.report.m import y\nfrom kdsr_plugins.demo import m\n'
                                    'from kdsr_plugins import train\n')
    (pkg / 'compat/c.py').write_text('from kdsr_plugins.core import a\n')
    monkeypatch.setattr(layout_report, 'ROOT', str(tmp_path))
    rep = layout_report.report()
    assert rep['upward_imports'] == [
        ('kdsr_plugins.compat.c', 'kdsr_plugins.core'),
        ('kdsr_plugins.compat.c', 'kdsr_plugins.core.a'),
        ('kdsr_plugins.core.a', 'kdsr_plugins.data_prep.m'),
        ('kdsr_plugins.core.b', 'kdsr_plugins.demo'),
        ('kdsr_plugins.core.b', 'kdsr_plugins.demo.m'),
        ('kdsr_plugins.core.b', 'kdsr_plugins.report.m'),
        ('kdsr_plugins.core.b', 'kdsr_plugins.tools'),
        ('kdsr_plugins.core.b', 'kdsr_plugins.tools.m'),
        ('kdsr_plugins.core.b', 'kdsr_plugins.train'),
    ]
