"""uvicorn's HTTP stacks side by side on this service: `python -m lab.stack`."""
