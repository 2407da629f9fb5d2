"""One module per provider wire format; each turns its JSON into a ChatRequest and back."""
