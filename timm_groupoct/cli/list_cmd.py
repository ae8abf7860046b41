"""`timm-groupoct list [FILTER]`: this package's model names."""
import timm_groupoct


def add_parser(sub):
    p = sub.add_parser('list', help="list this package's models")
    p.add_argument('filter', nargs='?', default='', help="wildcard filter, e.g. 'groupnet_*'")
    p.add_argument('--pretrained', action='store_true', help='only models with published weights (with tags)')
    p.set_defaults(run=run)


def run(args) -> int:
    for name in timm_groupoct.list_models(args.filter, pretrained=args.pretrained, include_tags=args.pretrained):
        print(name)
    return 0
