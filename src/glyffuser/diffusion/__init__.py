"""The model and its maths: the UNet (unet.py), the diffusion process (process.py: schedule, noising,
targets, loss, x̂₀, guidance, the sampling loop), one training step (training.py), the text encoder
(encoders.py), and the prompt-to-glyph pipeline object users call (pipeline.py)."""
