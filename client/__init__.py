"""The site: Flower ClientApp, local DP training, data checks and scoring. Imports only `shared`."""
