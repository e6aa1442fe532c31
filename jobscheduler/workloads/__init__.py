"""Programs that run inside the containers of the Jobs this service launches, one module per job type.

They use the standard library only, so a job image needs nothing beyond Python and this package."""
