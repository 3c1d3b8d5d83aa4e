"""``python -m peers --config FILE``: run one peer process."""
from __future__ import annotations

import json
import sys

import click

from emulator.service import run_service, setup_logging


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True),
              help="JSON config file (name, endpoints, chain, peers to connect to).")
def main(config_path: str) -> None:
    """Run one Lightning peer process."""
    from peers.config import PeerConfig
    from peers.node import PeerService

    with open(config_path) as fh:
        config = PeerConfig.from_json(json.load(fh))
    setup_logging(f"peer {config.name}")
    sys.exit(run_service(PeerService(config)))


if __name__ == "__main__":
    main()
