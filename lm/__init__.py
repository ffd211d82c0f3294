"""Word-level neural language models: FFNN, RNN, GRU, LSTM and Transformer under 60M parameters."""
