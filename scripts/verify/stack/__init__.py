"""uvicorn's HTTP stacks side by side on this service: `python -m scripts.verify stack`."""
