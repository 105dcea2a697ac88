# Rules of the finetune stage (thin: inputs, outputs, resources, one CLI call).
