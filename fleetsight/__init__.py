"""FleetSight: the command line, settings and local services around the pipeline."""
