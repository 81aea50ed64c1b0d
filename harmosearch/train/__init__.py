"""HarmoCLIP fine-tuning: datasets with region-phrase links, the three losses, the loop."""
