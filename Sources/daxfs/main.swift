print("daxfs")
