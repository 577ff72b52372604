"""A minimal stand-in for vq4all.network.Network: what the input-statistics passes use of it."""


class Net:
    """A torch model with the name and forward a statistics pass calls."""

    name = "toy"

    def __init__(self, model):
        self.model = model

    def forward(self, model, x):
        return model(x)
