# Rules of the report stage (thin: inputs, outputs, resources, one CLI call).
