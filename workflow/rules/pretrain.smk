# Rules of the pretrain stage (thin: inputs, outputs, resources, one CLI call).
