"""CelebA to WebDataset shards for SRGAN training (`srgan-preprocess`)."""
