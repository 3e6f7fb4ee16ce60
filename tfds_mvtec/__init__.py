"""TFDS builder for MVTec AD and MVTec-layout folders (to come with the data issue)."""
