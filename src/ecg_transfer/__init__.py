"""ECG transfer learning: does pretraining a 1-D autoencoder on unlabelled ECGs help a
rhythm classifier when labels are scarce? (Jang, Kim & Yoon, 2021, reproduced and extended.)"""

__version__ = "0.1.0"
