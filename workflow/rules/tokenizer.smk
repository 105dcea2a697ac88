# Rules of the tokenizer stage (thin: inputs, outputs, resources, one CLI call).
