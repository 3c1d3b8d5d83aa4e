"""``python -m l1chain --config FILE``: run the chain process."""
from __future__ import annotations

import json
import sys

import click

from emulator.service import run_service, setup_logging


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True),
              help="JSON config file (endpoints, genesis allocations, block interval).")
def main(config_path: str) -> None:
    """Run the L1 chain process."""
    from l1chain.server import ChainConfig, ChainService

    setup_logging("chain")
    with open(config_path) as fh:
        config = ChainConfig.from_json(json.load(fh))
    sys.exit(run_service(ChainService(config)))


if __name__ == "__main__":
    main()
