"""``python -m kdsr_plugins --list``: show what the plugin registered in BasicSR's registries.

``--options <ModelType>`` prints every option key of a model (type, default, doc);
``--options-md`` prints docs/options.md (both generated from the option schemas).
``--install-hook [--site-dir DIR]`` writes the start-up hook (a ``.pth`` file) that makes
``import torchvision`` / ``import basicsr`` work without importing ``kdsr_plugins`` first.
"""
import argparse
import sys

import kdsr_plugins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m kdsr_plugins', description=__doc__)
    parser.add_argument('--list', action='store_true', help='list registered archs, losses, models, datasets')
    parser.add_argument('--version', action='store_true', help='print the package version')
    parser.add_argument('--options', metavar='MODEL_TYPE', help='print every option key of a model type')
    parser.add_argument('--options-md', action='store_true', help='print the option reference (docs/options.md)')
    parser.add_argument('--install-hook', action='store_true',
                        help='install the start-up hook (kdsr_plugins_shims.pth) so that import torchvision / basicsr '
                        'work without importing kdsr_plugins first')
    parser.add_argument('--site-dir', help='with --install-hook: folder of the .pth (default: site-packages)')
    args = parser.parse_args(argv)
    if args.install_hook:
        from kdsr_plugins.compat.shims import install_hook_file
        print(f'start-up hook written: {install_hook_file(args.site_dir)}')
        return 0
    if args.version:
        print(kdsr_plugins.__version__)
        return 0
    if args.options or args.options_md:
        from kdsr_plugins.core.option_reference import model_reference, options_markdown
        from kdsr_plugins.core.schema import OptionError

        try:
            sys.stdout.write(options_markdown() if args.options_md else model_reference(args.options))
        except OptionError as err:
            print(err, file=sys.stderr)
            return 2
        return 0
    if not args.list:
        parser.print_help()
        return 0
    for registry, names in kdsr_plugins.registered_names().items():
        print(f'{registry}: {", ".join(names) if names else "(none)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
