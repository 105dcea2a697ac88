"""Stage 3: LoRA (or full) fine-tuning of the pretrained backbone on one downstream dataset.

`vqdna finetune` runs one dataset x grid point x seed (`run.py`); `vqdna summarize` picks the
grid point on dev and reports the test metric over seeds (`summarize.py`).
"""
