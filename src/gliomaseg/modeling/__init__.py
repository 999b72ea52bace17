"""What a model is: smp architectures and encoders, losses, the model spec stored with every model, its card."""
