"""HarmoCLIP fine-tuning: datasets with region-phrase links, the losses, the forward pass, the loop,
and training on several processes."""
