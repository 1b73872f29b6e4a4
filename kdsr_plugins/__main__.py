"""``python -m kdsr_plugins --list``: show what the plugin registered in BasicSR's registries."""
import argparse
import sys

import kdsr_plugins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m kdsr_plugins', description=__doc__)
    parser.add_argument('--list', action='store_true', help='list registered archs, losses, models, datasets')
    parser.add_argument('--version', action='store_true', help='print the package version')
    args = parser.parse_args(argv)
    if args.version:
        print(kdsr_plugins.__version__)
        return 0
    if not args.list:
        parser.print_help()
        return 0
    for registry, names in kdsr_plugins.registered_names().items():
        print(f'{registry}: {", ".join(names) if names else "(none)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
