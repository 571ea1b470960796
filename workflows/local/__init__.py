"""Running Snapflow on one machine: an embedded object store, the local pipeline runner, the demo."""
