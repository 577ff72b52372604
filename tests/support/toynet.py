"""A minimal stand-in for vq4all.network.Network: what the input-statistics passes use of it."""

import copy


class Net:
    """A torch model with the name and forward a statistics pass calls."""

    name = "toy"

    def __init__(self, model):
        self.model = model

    def forward(self, model, x):
        return model(x)

    def with_weights(self, weights):
        """A deep copy of the model with the given state-dict entries replaced, as
        vq4all.network.Network.with_weights."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(weights, strict=False)
        return model
