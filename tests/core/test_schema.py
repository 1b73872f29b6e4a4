"""The declarative option schema (kdsr_plugins.core.schema) and the helpers ported onto it."""
import pytest

from kdsr_plugins.core.options import check_option_keys, option_bool, option_choice
from kdsr_plugins.core.schema import REQUIRED, Field, OptionError, Schema, check_choice, coerce_number

SCHEMA = Schema('train.demo_opt', (
    Field('mode', 'str', 'fast', 'how', choices=('fast', 'exact'), aliases={'quick': 'fast'}),
    Field('prob', 'number', 0.5, 'a probability', min=0.0, max=1.0),
    Field('steps', 'int', REQUIRED, 'iterations', min=1),
    Field('flag', 'bool', False, 'a switch'),
    Field('weights', 'list', None, 'numbers', item='number'),
    Field('sub', 'mapping', None, 'nested', schema=Schema('x', (Field('lr', 'number', None, min=0.0),))),
))


def test_unknown_key_lists_valid_keys_and_close_matches():
    with pytest.raises(OptionError, match=r"Unknown option key\(s\) \['stpes'\] in train.demo_opt; valid keys: "
                                          r"\['flag', 'mode', 'prob', 'steps', 'sub', 'weights'\]\. "
                                          r"Did you mean: 'stpes' -> 'steps'\?"):
        SCHEMA.check({'stpes': 3})


def test_defaults_required_and_normalised_values():
    out = SCHEMA.check({'steps': '5e3', 'mode': 'quick', 'prob': '2.5e-1', 'weights': ['1e-2', 2]})
    assert out == {'mode': 'fast', 'prob': 0.25, 'steps': 5000, 'flag': False, 'weights': [0.01, 2], 'sub': None}
    assert isinstance(out['steps'], int)
    with pytest.raises(OptionError, match=r"train.demo_opt needs a 'steps' key"):
        SCHEMA.check({})
    assert SCHEMA.check({'steps': 1}, defaults=False) == {'steps': 1}


@pytest.mark.parametrize('block, match', [
    ({'steps': 1, 'prob': 1.5}, r'train.demo_opt.prob: expected a number in \[0, 1\], got 1.5'),
    ({'steps': 0}, r'train.demo_opt.steps: expected an integer in \[1, inf\), got 0'),
    ({'steps': 2.5}, r'steps: expected an integer, got 2.5'),
    ({'steps': 1, 'flag': 'yes'}, r"train.demo_opt.flag: expected true/false, got 'yes'"),
    ({'steps': 1, 'mode': 'slow'}, r"mode: invalid value 'slow'; valid: \['fast', 'exact'\] \(aliases: \['quick'\]\)"),
    ({'steps': 1, 'sub': {'lr': -1}}, r'train.demo_opt.sub.lr: expected a number in \[0, inf\), got -1'),
    ({'steps': 1, 'sub': {'lrr': 1}}, r"\['lrr'\] in train.demo_opt.sub.*Did you mean: 'lrr' -> 'lr'"),
    ({'steps': True}, 'expected an integer, got True'),
])
def test_bad_values_name_the_key(block, match):
    with pytest.raises(OptionError, match=match):
        SCHEMA.check(block)


def test_in_place_coerces_numbers_without_adding_defaults():
    block = {'steps': '1e3', 'sub': {'lr': '1e-4'}}
    SCHEMA.check(block, in_place=True, defaults=False)
    assert block == {'steps': 1000, 'sub': {'lr': 1e-4}}


def test_custom_message_and_check_choice():
    field = Field('p', 'number', 0.3, min=0.0, max=1.0, message='{where} must be a number in [0, 1], got {value}')
    with pytest.raises(OptionError, match=r'train.noisy.p must be a number in \[0, 1\], got 2'):
        field.validate(2, 'train.noisy.p')
    assert check_choice('a', ('a', 'b'), 'never') == 'a'
    with pytest.raises(OptionError, match='^bad c$'):
        check_choice('c', ('a', 'b'), 'bad c')
    assert coerce_number('1e-4') == 1e-4 and coerce_number('abc') == 'abc' and coerce_number('-5E3') == -5000.0


def test_ported_helpers_keep_their_messages():
    with pytest.raises(ValueError, match=r"Unknown option key\(s\) \['b'\] in blk; valid keys: \['a'\]\."):
        check_option_keys({'b': 1}, ('a',), 'blk')
    with pytest.raises(ValueError, match='blk must be a mapping, got list'):
        check_option_keys([1], ('a',), 'blk')
    assert option_choice('w.k', 'joint', ('single_step',), {'joint': 'single_step'}) == 'single_step'
    with pytest.raises(ValueError, match=r"w.k: invalid value 1; valid: \['x'\]"):
        option_choice('w.k', 1, ('x',))
    assert option_bool('w.b', False) is False
    with pytest.raises(ValueError, match='w.b: expected true/false, got None'):
        option_bool('w.b', None)


def test_reference_rows_flatten_nested_blocks():
    rows = {r[0]: r for r in SCHEMA.reference_rows()}
    assert rows['train.demo_opt.prob'][1:3] == ('number in [0, 1]', '0.5')
    assert rows['train.demo_opt.steps'][2] == 'required'
    assert rows['train.demo_opt.mode'][1] == 'fast | exact'
    assert 'train.demo_opt.sub.lr' in rows
